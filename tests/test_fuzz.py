"""Fuzzing the real server: schemathesis generates requests for every operation of the OpenAPI
document bendi serves (valid ones, which reach the engine and the knowledge base, and invalid ones),
and hand-written hostile cases cover what a generator rarely finds: deep nesting, huge numbers,
invalid Unicode, oversize bodies, tiny and huge num_ctx / keep_alive, bursts of concurrent
requests. Every response must be a documented status (never a 500) with a JSON error body in the
route's dialect, and the server must still serve afterwards.

Examples per operation are bounded to fit CI (FUZZ_EXAMPLES, default 8 per mode); FUZZ_SEED picks
another set of examples (by default the same ones every run, so a failure reproduces); FUZZ_ONLY
limits the generated requests to some paths (FUZZ_ONLY=/admin,/auth).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from tests.server_util import ServerProcess

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
KB = "demo"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
SEED = os.environ.get("FUZZ_SEED")
#: only the operations whose path starts with one of these (comma-separated), e.g. "/admin,/auth"
ONLY = tuple(p for p in os.environ.get("FUZZ_ONLY", "").split(",") if p)
LIMIT = 1024 * 1024  # the fuzzed server's body limit: oversize probes stay small
#: the fuzzed server's bootstrap admin key: authentication is on, as on a shared server, so a
#: generated request that creates an admin user cannot lock the suite out, and the admin API is
#: fuzzed too
KEY = "fuzz-bootstrap-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
#: statuses any route may answer that a generated request cannot be expected to avoid
ALWAYS = {405}  # a generated path parameter with "/" in it can land on another route's path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # small contexts and few slots bound every generation; the demo knowledge base gives the
    # knowledge-base routes something to read and write
    proc = ServerProcess(tmp_path_factory.mktemp("fuzz"), "--slots", "4", "--ctx", "192", "--demo",
                         env={"BENDI_MAX_REQUEST_BYTES": str(LIMIT), "BENDI_QUEUE_SIZE": "256", "BENDI_API_KEY": KEY})
    proc.wait_ready(timeout=300)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def doc(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(server.url + "/openapi.json", headers=AUTH).json()


def alive(server: ServerProcess) -> None:
    assert server.proc.poll() is None, "the server died:\n" + server.output()[-4000:]
    assert httpx.get(server.url + "/health", timeout=60).status_code == 200


def check_response(method: str, template: str, documented: set[str], response: Any, text: str,
                   content_type: str) -> None:
    """A documented status, never a 500; errors as JSON in the route's dialect; streams made of
    well-formed events."""
    status = response.status_code
    where = f"{method} {template} -> {status}: {text[:400]}"
    assert status != 500, where
    assert str(status) in documented or status in ALWAYS, "undocumented status: " + where
    if status >= 400:
        body = json.loads(text)
        if template.startswith("/api/"):
            assert set(body) == {"error"} and isinstance(body["error"], str), where
        else:
            assert set(body["error"]) == {"message", "type", "param", "code"}, where
        return
    if "ndjson" in content_type:
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert lines, where
        errors = [line for line in lines if "error" in line]
        assert not any("internal error" in json.dumps(e) for e in errors), where
    elif "event-stream" in content_type:
        events = [block[6:] for block in text.split("\n\n") if block.startswith("data: ")]
        assert events and events[-1] == "[DONE]", where
        for event in events[:-1]:
            assert "internal error" not in event, where
            json.loads(event)
    elif "json" in content_type:
        json.loads(text)


def realistic(case: Any, model: bool, kb: bool) -> Any:
    """Point some generated requests at things that exist, so they reach the engine and the
    knowledge base instead of stopping at 404; never at the model or knowledge base under test
    in a request that removes or replaces something."""
    method, path = case.operation.method.upper(), case.operation.path
    destructive = method == "DELETE" or path == "/api/create"
    if kb and not destructive and "name" in case.path_parameters:
        case.path_parameters["name"] = KB
    if model and not destructive and "model" in case.path_parameters:
        case.path_parameters["model"] = MODEL
    if model and isinstance(case.body, dict):
        for key in ("source", "from") if destructive else ("model", "source", "from"):
            if key in case.body:
                case.body[key] = MODEL
        if case.body.get("destination") == MODEL:
            case.body["destination"] = "fuzz:copy"
    return case


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_generated_requests_for_every_operation(server: ServerProcess, doc: dict[str, Any], mode: str) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_dict(doc)
    session = requests.Session()
    session.headers.update(AUTH)
    generation = schemathesis.GenerationMode.POSITIVE if mode == "positive" else schemathesis.GenerationMode.NEGATIVE
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25  # every route of the document
    for operation in operations:
        if ONLY and not operation.path.startswith(ONLY):
            continue
        documented = set(doc["paths"][operation.path][operation.method.lower()]["responses"])
        fuzz_operation(server, session, operation, documented, generation)
        alive(server)


def fuzz_operation(server: ServerProcess, session: requests.Session, operation: Any, documented: set[str],
                   generation: Any) -> None:
    """EXAMPLES generated requests to one operation, each checked; no shrinking (CI time)."""
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    strategy = st.builds(realistic, operation.as_strategy(generation_mode=generation), st.booleans(), st.booleans())

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=SEED is None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @seed(int(SEED or 0))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=server.url, session=session, timeout=300)
        text = response.content.decode("utf-8", "replace")
        check_response(case.method.upper(), operation.path, documented, response, text,
                       response.headers.get("content-type", ""))

    try:
        run()
    except Unsatisfiable:
        # negative mode: without a body, a route whose only parameters are strings in the path has
        # nothing to make invalid (any string is a string)
        assert generation.name == "NEGATIVE" and "requestBody" not in operation.definition.raw, operation.path


# -- hand-written hostile requests -------------------------------------------------------------

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
TEXT_FIELDS = [
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "\ud800"}]}, "messages.0.content"),
    ("/v1/completions", {"model": MODEL, "prompt": "a\udfffb", "max_tokens": 2}, "prompt"),
    ("/v1/embeddings", {"model": MODEL, "input": ["ok", "\ud83d"]}, "input.1"),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "\ud800"}], "stream": False}, "messages.0.content"),
    ("/api/generate", {"model": MODEL, "prompt": "\udc00", "stream": False}, "prompt"),
    ("/api/embed", {"model": MODEL, "input": "\ud800"}, "input"),
    ("/api/embeddings", {"model": MODEL, "prompt": "\ud800"}, "prompt"),
    ("/kb/demo/search", {"query": "\ud800"}, "query"),
    ("/kb/demo/ask", {"question": "\ud800", "stream": False}, "question"),
    ("/v1/chat/completions", {**CHAT, "stop": ["\ud800"]}, "stop.0"),
    ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "hi", "\ud800": 1}]}, "messages.0"),
]


def post(server: ServerProcess, path: str, body: Any = None, *, content: bytes | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    if content is None:
        # json.dumps escapes lone surrogates as \\udXXX: valid JSON that decodes to invalid text
        content = json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, timeout=300,
                      headers={"Content-Type": "application/json", **AUTH, **(headers or {})})


def assert_dialect_error(path: str, res: httpx.Response, status: int) -> dict[str, Any]:
    assert res.status_code == status, (path, res.status_code, res.text[:300])
    body = res.json()
    if path.startswith("/api/"):
        assert set(body) == {"error"} and isinstance(body["error"], str)
        return {"message": body["error"]}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


@pytest.mark.parametrize("path, body, field", TEXT_FIELDS)
def test_invalid_unicode_is_a_400_naming_the_field(server: ServerProcess, path: str, body: Any, field: str) -> None:
    error = assert_dialect_error(path, post(server, path, body), 400)
    assert field in error["message"], error
    if "param" in error:
        assert error["param"] == field


def test_hostile_bodies(server: ServerProcess) -> None:
    cases: list[tuple[str, bytes, int]] = [
        ("/v1/chat/completions", b"[" * 100_000, 400),  # deep nesting
        ("/api/chat", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400),
        ("/api/generate", json.dumps({"model": MODEL, "prompt": "x", "options": {"temperature": 1e308}}).encode()
         .replace(b"1e+308", b"1e999"), 400),  # a number that is infinity
        ("/v1/chat/completions", b'{"model": "m", "messages": [], "temperature": NaN}', 400),
        ("/v1/completions", b'{"model": "m", "prompt": "x", "max_tokens": ' + b"9" * 5000 + b"}", 400),
        ("/api/embed", b'{"model": "m", "input": "\xff\xfe bytes that are not UTF-8"}', 400),
        ("/kb", b'{"name": ["not", "a", "string"]}', 400),
        ("/v1/embeddings", json.dumps({"model": MODEL, "input": [[1, 2, 3]]}).encode(), 400),
    ]
    for path, content, status in cases:
        assert_dialect_error(path, post(server, path, content=content), status)
    huge = {"model": MODEL, "prompt": "x" * (LIMIT + 10)}
    assert_dialect_error("/api/generate", post(server, "/api/generate", huge), 413)

    def chunks(total: int) -> Iterator[bytes]:
        piece = b" " * 65536
        for _ in range(total // len(piece)):
            yield piece

    for path in ("/v1/chat/completions", "/api/chat", "/kb/demo/search"):
        res = httpx.post(server.url + path, content=chunks(4 * LIMIT), timeout=300,
                         headers={"Content-Type": "application/json", **AUTH})
        assert_dialect_error(path, res, 413)
    upload = httpx.post(server.url + "/kb/demo/documents", content=chunks(4 * LIMIT), timeout=300,
                        headers={"Content-Type": "multipart/form-data; boundary=x", **AUTH})
    assert_dialect_error("/kb/demo/documents", upload, 413)
    alive(server)


@pytest.mark.parametrize("options, status", [
    ({"num_ctx": 16}, 400), ({"num_ctx": 10**12}, 200), ({"num_ctx": -1}, 400), ({"num_ctx": "big"}, 400),
    ({"num_predict": 10**30}, 200), ({"top_k": 10**30}, 200), ({"repeat_last_n": 10**30, "repeat_penalty": 1.3}, 200),
    ({"seed": -(10**30)}, 200), ({"temperature": 1e30}, 200), ({"presence_penalty": -1e30}, 200),
    ({"repeat_penalty": 1e-30}, 200), ({"min_p": 1.0}, 200),
])
def test_extreme_options(server: ServerProcess, options: dict[str, Any], status: int) -> None:
    body = {"model": MODEL, "prompt": "Say hi.", "stream": False, "options": {"num_predict": 4, **options}}
    res = post(server, "/api/generate", body)
    if status == 200:
        assert res.status_code == 200, res.text
        assert res.json()["done"] is True
    else:
        assert_dialect_error("/api/generate", res, status)


@pytest.mark.parametrize("keep_alive", [0.001, 0, -1, "-1", 1e308, 10**400, "1e400", "5m", "0s", "1h30m"])
def test_extreme_keep_alive(server: ServerProcess, keep_alive: Any) -> None:
    body = {"model": MODEL, "prompt": "hi", "stream": False, "keep_alive": keep_alive, "options": {"num_predict": 2}}
    res = post(server, "/api/generate", body)
    assert res.status_code == 200, res.text
    ps = httpx.get(server.url + "/api/ps", headers=AUTH)
    assert ps.status_code == 200 and all("expires_at" in m for m in ps.json()["models"])
    for bad in ("soon", "1..5s", "nan", True):
        assert_dialect_error("/api/generate", post(server, "/api/generate", {**body, "keep_alive": bad}), 400)


def test_a_burst_of_mixed_concurrent_requests(server: ServerProcess) -> None:
    requests_: list[tuple[str, Any]] = []
    for i in range(6):
        requests_ += [
            ("/v1/chat/completions", {**CHAT, "seed": i, "stream": i % 2 == 0}),
            ("/api/embed", {"model": MODEL, "input": [f"text {i}"] * 8, "keep_alive": 0.01}),
            ("/api/generate", {"model": MODEL, "prompt": "", "keep_alive": 0}),  # unload
            ("/kb/demo/search", {"query": f"pump {i}"}),
            ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "\ud800"}]}),
            ("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                               "options": {"num_ctx": 64 + 32 * (i % 3), "num_predict": 2}}),
        ]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda item: post(server, *item).status_code, requests_))
    assert 500 not in statuses and set(statuses) <= {200, 400}, statuses
    alive(server)


def test_metrics_counted_every_response(server: ServerProcess) -> None:
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("bendi_http_requests_total{"):
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0) + float(line.rsplit(" ", 1)[1])
    assert counts.get("413", 0) >= 5 and counts.get("400", 0) >= 20 and counts.get("200", 0) >= 20, counts
    assert "500" not in counts, counts
    alive(server)
