"""The real server, driven by the official `openai` and `ollama` client packages."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import numpy as np
import ollama
import openai
import pytest
from tests.server_util import ServerProcess

from bendi.store import ModelStore, bundled_model_path

pytestmark = pytest.mark.slow

# A template that opens a think block, with few-shot turns that teach the small bundled model to
# close it: the model then emits reasoning, `</think>`, and an answer, like DeepSeek-R1 does.
THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "<|im_start|>assistant\n<think>\n"
)
SHOTS = []
for q, r, a in [("What is 2+2?", "Two plus two is four.", "4"), ("What is 3+3?", "Three plus three is six.", "6"),
                ("What is 1+1?", "One plus one is two.", "2")]:
    SHOTS += [{"role": "user", "content": q}, {"role": "assistant", "content": f"<think>\n{r}\n</think>\n\n{a}"}]
THINK_MESSAGES = [*SHOTS, {"role": "user", "content": "What is 4+4?"}]
HELLO = [{"role": "user", "content": "Say hello in five words."}]
# At temperature 0 the bundled model answers this with a phrase it repeats until the context ends.
LOOPING = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("server-home")
    store = ModelStore(home / "models")
    path = bundled_model_path()
    assert path is not None
    store.import_file(path, "r1-toy", template=THINK_TEMPLATE, link="symlink")
    proc = ServerProcess(home, "--slots", "8", "--ctx", "1024").wait_ready()
    yield proc
    proc.stop()




# -- OpenAI ------------------------------------------------------------------------------------


def test_openai_chat_stream_matches_non_stream(oai: openai.OpenAI) -> None:
    full = oai.chat.completions.create(model="smollm2:135m", messages=HELLO, temperature=0, max_tokens=24)
    choice = full.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert full.usage is not None and full.usage.completion_tokens > 0 and full.usage.prompt_tokens > 0
    stream = oai.chat.completions.create(model="smollm2:135m", messages=HELLO, temperature=0, max_tokens=24,
                                         stream=True, stream_options={"include_usage": True})
    parts, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(parts) == choice.message.content
    assert finish == choice.finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens


def test_openai_completions_and_logprobs(oai: openai.OpenAI) -> None:
    out = oai.completions.create(model="smollm2:135m", prompt="The capital of France is", max_tokens=5,
                                 temperature=0, logprobs=2)
    choice = out.choices[0]
    assert choice.text and choice.finish_reason == "length"
    assert choice.logprobs is not None and len(choice.logprobs.tokens) == 5
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)
    streamed = "".join(c.choices[0].text for c in oai.completions.create(
        model="smollm2:135m", prompt="The capital of France is", max_tokens=5, temperature=0, stream=True)
        if c.choices)
    assert streamed == choice.text
    chat = oai.chat.completions.create(model="smollm2:135m", messages=HELLO, max_tokens=3, temperature=0,
                                       logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and len(content[0].top_logprobs) == 2


def test_openai_embeddings_float_and_base64(oai: openai.OpenAI) -> None:
    floats = oai.embeddings.create(model="smollm2:135m", input=["hello world", "goodbye"])
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 576
    assert abs(np.linalg.norm(floats.data[0].embedding) - 1) < 1e-3
    raw = httpx.post(str(oai.base_url) + "embeddings", json={"model": "smollm2:135m", "input": "hello world",
                                                             "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, floats.data[0].embedding, atol=1e-6)


def test_openai_models(oai: openai.OpenAI) -> None:
    ids = {m.id for m in oai.models.list()}
    assert {"smollm2:135m", "r1-toy:latest"} <= ids
    assert oai.models.retrieve("smollm2:135m").id == "smollm2:135m"


def test_openai_reasoning_fields(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(model="r1-toy", messages=THINK_MESSAGES, temperature=0, max_tokens=40)
    msg = out.choices[0].message
    extra = msg.model_extra or {}
    assert extra.get("reasoning_content") and extra.get("reasoning") == extra["reasoning_content"]
    assert msg.content and "think>" not in msg.content and "think>" not in extra["reasoning_content"]
    reasoning, content = [], []
    for chunk in oai.chat.completions.create(model="r1-toy", messages=THINK_MESSAGES, temperature=0,
                                             max_tokens=40, stream=True):
        for c in chunk.choices:
            reasoning.append((c.delta.model_extra or {}).get("reasoning_content") or "")
            content.append(c.delta.content or "")
    assert "".join(reasoning) == extra["reasoning_content"]
    assert "".join(content) == msg.content


def test_openai_json_schema(oai: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    out = oai.chat.completions.create(
        model="smollm2:135m", messages=[{"role": "user", "content": "Invent a person."}], max_tokens=80,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)
    obj = oai.chat.completions.create(model="smollm2:135m", messages=HELLO, max_tokens=200, temperature=0,
                                      response_format={"type": "json_object"})
    assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)


def test_openai_errors(oai: openai.OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        oai.chat.completions.create(model="nope", messages=HELLO)
    assert nf.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as long:
        oai.chat.completions.create(model="smollm2:135m", messages=[{"role": "user", "content": "x " * 3000}])
    assert long.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as n:
        oai.chat.completions.create(model="smollm2:135m", messages=HELLO, n=2)
    assert n.value.body["param"] == "n"  # type: ignore[index]
    bad = httpx.post(server.url + "/v1/chat/completions", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    wrong_type = httpx.post(server.url + "/v1/chat/completions",
                            json={"model": "smollm2:135m", "messages": HELLO, "temperature": "hot"})
    assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == "temperature"
    # and the server still serves
    assert oai.chat.completions.create(model="smollm2:135m", messages=HELLO, max_tokens=2).choices


# -- Ollama ------------------------------------------------------------------------------------


def test_ollama_chat_and_generate(oll: ollama.Client) -> None:
    res = oll.chat(model="smollm2:135m", messages=HELLO, options={"temperature": 0, "num_predict": 16})
    assert res.message.content and res.done and res.done_reason in ("stop", "length")
    assert res.eval_count and res.prompt_eval_count and res.total_duration and res.eval_duration
    parts = list(oll.chat(model="smollm2:135m", messages=HELLO, stream=True,
                          options={"temperature": 0, "num_predict": 16}))
    assert "".join(p.message.content or "" for p in parts) == res.message.content
    assert parts[-1].done and parts[-1].eval_count == res.eval_count
    gen = oll.generate(model="smollm2:135m", prompt="Say hello.", options={"num_predict": 8, "seed": 3,
                                                                          "temperature": 0.7})
    assert gen.response and gen.done
    again = oll.generate(model="smollm2:135m", prompt="Say hello.", options={"num_predict": 8, "seed": 3,
                                                                            "temperature": 0.7})
    assert again.response == gen.response
    raw = oll.generate(model="smollm2:135m", prompt="1, 2, 3,", raw=True, options={"num_predict": 4})
    assert raw.response


def test_ollama_thinking(oll: ollama.Client) -> None:
    res = oll.chat(model="r1-toy", messages=THINK_MESSAGES, think=True, options={"temperature": 0, "num_predict": 40})
    assert res.message.thinking and res.message.content
    assert "think>" not in res.message.content
    hidden = oll.chat(model="r1-toy", messages=THINK_MESSAGES, options={"temperature": 0, "num_predict": 40})
    assert not hidden.message.thinking and hidden.message.content == res.message.content
    streamed = list(oll.chat(model="r1-toy", messages=THINK_MESSAGES, think=True, stream=True,
                             options={"temperature": 0, "num_predict": 40}))
    assert "".join(p.message.thinking or "" for p in streamed) == res.message.thinking


def test_ollama_format_schema(oll: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
              "required": ["city"]}
    res = oll.chat(model="smollm2:135m", messages=[{"role": "user", "content": "Name a city."}],
                   format=schema, options={"num_predict": 80, "temperature": 0})
    jsonschema.validate(json.loads(res.message.content or ""), schema)


def test_ollama_embed(oll: ollama.Client) -> None:
    res = oll.embed(model="smollm2:135m", input=["a", "b c"])
    assert len(res.embeddings) == 2 and len(res.embeddings[0]) == 576
    single = oll.embeddings(model="smollm2:135m", prompt="a")
    assert np.allclose(single.embedding, res.embeddings[0], atol=1e-6)


def test_ollama_model_routes(oll: ollama.Client, server: ServerProcess) -> None:
    names = {m.model for m in oll.list().models}
    assert "smollm2:135m" in names
    show = oll.show("smollm2:135m")
    assert show.details and show.details.quantization_level == "Q4_1"
    assert show.modelinfo and show.modelinfo["llama.context_length"] == 8192
    assert "<|im_start|>" in (show.template or "")
    oll.copy("smollm2:135m", "copy-of-smollm")
    assert "copy-of-smollm:latest" in {m.model for m in oll.list().models}
    oll.delete("copy-of-smollm")
    assert "copy-of-smollm:latest" not in {m.model for m in oll.list().models}
    with pytest.raises(ollama.ResponseError) as missing:
        oll.delete("copy-of-smollm")
    assert missing.value.status_code == 404
    assert httpx.get(server.url + "/api/version").json()["version"]
    with pytest.raises(ollama.ResponseError) as pull:
        oll.pull("deepseek-r1:7b")
    assert pull.value.status_code == 501 and "import" in pull.value.error


def test_ollama_create_requantizes_and_the_new_model_serves(oll: ollama.Client, server: ServerProcess) -> None:
    steps = [s.status for s in oll.create(model="smol-q8", from_="smollm2:135m", quantize="q8_0",
                                          system="Answer in one word.", stream=True)]
    assert steps[0] == "quantizing smollm2:135m to Q8_0" and steps[-1] == "success"
    show = oll.show("smol-q8")
    assert show.details and show.details.quantization_level == "Q8_0"
    system = httpx.post(server.url + "/api/show", json={"model": "smol-q8"}).json()["system"]
    assert system == "Answer in one word."  # the client's ShowResponse has no field for it
    reply = oll.chat(model="smol-q8", messages=HELLO, options={"num_predict": 4})
    assert reply.message.content
    # Plain create (no quantize) is a copy with other defaults; the source is untouched.
    assert oll.create(model="smol-terse", from_="smollm2:135m", parameters={"temperature": 0.1}).status == "success"
    assert oll.show("smollm2:135m").details.quantization_level == "Q4_1"  # type: ignore[union-attr]
    for bad, words in (
        ({"from_": "smollm2:135m", "quantize": "q4_0"}, "already quantized"),
        ({"from_": "smollm2:135m", "quantize": "q9"}, "unknown quantization"),
        ({"from_": "no-such-model", "quantize": "q8_0"}, "not found"),
        ({"files": {"m.gguf": "sha256:00"}}, "bendi import"),
    ):
        with pytest.raises(ollama.ResponseError) as err:
            oll.create(model="smol-bad", **bad)  # type: ignore[arg-type]
        assert words in err.value.error and err.value.status_code in (400, 404)
    oll.delete("smol-q8")
    oll.delete("smol-terse")
    assert "smol-bad:latest" not in {m.model for m in oll.list().models}


def test_ollama_ps_and_keep_alive(oll: ollama.Client) -> None:
    oll.generate(model="smollm2:135m", prompt="hi", options={"num_predict": 1})
    assert "smollm2:135m" in {m.model for m in oll.ps().models}
    oll.generate(model="smollm2:135m", keep_alive=0)  # empty prompt + keep_alive 0 unloads
    assert "smollm2:135m" not in {m.model for m in oll.ps().models}
    oll.generate(model="smollm2:135m", keep_alive="10m")  # empty prompt loads
    ps = {m.model: m for m in oll.ps().models}
    assert ps["smollm2:135m"].expires_at is not None


def test_ollama_errors(oll: ollama.Client, server: ServerProcess) -> None:
    with pytest.raises(ollama.ResponseError) as nf:
        oll.chat(model="nope", messages=HELLO)
    assert nf.value.status_code == 404 and "not found" in nf.value.error
    bad = httpx.post(server.url + "/api/chat", content=b"{oops")
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
    wrong = httpx.post(server.url + "/api/generate", json={"model": "smollm2:135m", "prompt": "x",
                                                           "options": {"temperature": "warm"}})
    assert wrong.status_code == 400 and "temperature" in wrong.json()["error"]
    assert oll.chat(model="smollm2:135m", messages=HELLO, options={"num_predict": 2}).done


# -- Engine behaviour through the server -------------------------------------------------------


def running(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("bendi_requests_running{"))


def test_client_disconnect_frees_the_slot(server: ServerProcess) -> None:
    body = {"model": "smollm2:135m", "messages": LOOPING, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as response:
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
        assert running(server) >= 1
    # the client is gone: the sequence must leave its slot promptly (poll with a deadline)
    import time

    deadline = time.monotonic() + 30
    while running(server) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(server) == 0


def test_eight_concurrent_streams_complete(oai: openai.OpenAI) -> None:
    results: dict[int, tuple[str, str | None]] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            parts, finish = [], None
            for chunk in oai.chat.completions.create(
                model="smollm2:135m", stream=True, max_tokens=32, temperature=0.8, seed=i,
                messages=[{"role": "user", "content": f"Tell me a fact about the number {i}."}],
            ):
                for c in chunk.choices:
                    parts.append(c.delta.content or "")
                    finish = c.finish_reason or finish
            results[i] = ("".join(parts), finish)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 8
    assert all(text and finish in ("stop", "length") for text, finish in results.values())


def test_metrics(server: ServerProcess, oai: openai.OpenAI) -> None:
    oai.chat.completions.create(model="smollm2:135m", messages=HELLO, max_tokens=4)
    text = httpx.get(server.url + "/metrics").text
    for name in ("bendi_http_requests_total", "bendi_output_tokens_total", "bendi_prompt_tokens_total",
                 "bendi_time_to_first_token_seconds_bucket", "bendi_time_per_output_token_seconds_bucket",
                 "bendi_queue_depth", "bendi_model_loaded"):
        assert name in text, name


# -- Every route answers errors in its dialect's shape -----------------------------------------

ROUTES = [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("POST", "/api/chat"), ("POST", "/api/generate"), ("POST", "/api/embed"), ("POST", "/api/embeddings"),
    ("POST", "/api/show"), ("DELETE", "/api/delete"), ("POST", "/api/copy"), ("POST", "/api/pull"),
    ("POST", "/api/create"),
    ("POST", "/kb"), ("POST", "/kb/demo/search"), ("POST", "/kb/demo/ask"),
]


@pytest.mark.parametrize("method, path", ROUTES)
def test_error_shape_of_every_route(server: ServerProcess, method: str, path: str) -> None:
    for content in (b"{broken", b"[]", b""):
        res = httpx.request(method, server.url + path, content=content)
        assert res.status_code == 400, (path, content, res.text)
        body = res.json()
        if path.startswith("/api/"):
            assert set(body) == {"error"} and isinstance(body["error"], str)
        else:
            assert set(body["error"]) == {"message", "type", "param", "code"}


def test_unknown_routes_and_methods_answer_in_the_dialect(server: ServerProcess) -> None:
    for path, status in (("/v1/nothing", 404), ("/api/nothing", 404), ("/kb/demo/nothing", 404),
                         ("/v1/chat/completions", 405), ("/api/chat", 405)):
        res = httpx.get(server.url + path)
        assert res.status_code == status, path
        error = res.json()["error"]
        if path.startswith("/api/"):
            assert isinstance(error, str)
        else:
            assert set(error) == {"message", "type", "param", "code"}


def test_auth_and_bind_rules(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bendi.cli.main import cli

    refused = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert refused.exit_code == 1 and "without authentication" in refused.stderr

    proc = ServerProcess(tmp_path / "home", env={"BENDI_API_KEY": "s3cret"}).wait_ready()
    try:
        assert httpx.get(proc.url + "/health").status_code == 200
        denied = httpx.get(proc.url + "/v1/models")
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(proc.url + "/api/tags").json() == {"error": denied.json()["error"]["message"]}
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=proc.url + "/v1", api_key="wrong", max_retries=0).models.list()
        ok = openai.OpenAI(base_url=proc.url + "/v1", api_key="s3cret", max_retries=0).models.list()
        assert any(m.id == "smollm2:135m" for m in ok)
        tags = ollama.Client(host=proc.url, headers={"Authorization": "Bearer s3cret"}).list()
        assert tags.models
        big = httpx.post(proc.url + "/v1/chat/completions", headers={"Authorization": "Bearer s3cret"},
                         content=b"x" * (9 * 1024 * 1024))
        assert big.status_code == 413
    finally:
        assert proc.stop() == 0


def test_graceful_shutdown_finishes_streams(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "home", env={"BENDI_SHUTDOWN_GRACE": "300"}).wait_ready()
    body = {"model": "smollm2:135m", "messages": HELLO, "max_tokens": 40, "stream": True}
    lines: list[str] = []
    with httpx.stream("POST", proc.url + "/v1/chat/completions", json=body, timeout=120) as response:
        it = response.iter_lines()
        lines.append(next(it))
        lines.append(next(it))
        code_holder: list[int] = []
        stopper = threading.Thread(target=lambda: code_holder.append(proc.stop(timeout=60)))
        stopper.start()
        lines.extend(it)
        stopper.join()
    assert code_holder == [0]
    events = [line for line in lines if line]
    assert events[-1] == "data: [DONE]"  # the in-flight stream ran to its end
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_shutdown_ends_long_streams_with_an_error_event(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path / "home", env={"BENDI_SHUTDOWN_GRACE": "0.5"}).wait_ready()
    body = {"model": "smollm2:135m", "messages": LOOPING, "options": {"temperature": 0}}
    with httpx.stream("POST", proc.url + "/api/chat", json=body, timeout=120) as response:
        it = response.iter_lines()
        first = next(it)
        code_holder: list[int] = []
        stopper = threading.Thread(target=lambda: code_holder.append(proc.stop(timeout=60)))
        stopper.start()
        rest = [line for line in it if line]
        stopper.join()
    assert json.loads(first)["done"] is False
    assert "shutting down" in json.loads(rest[-1]).get("error", ""), rest[-3:]
    assert code_holder == [0]


def test_openai_usage_reports_cached_prompt_tokens(oai: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "You answer in one short sentence."},
                {"role": "user", "content": "Name a colour of the sky."}]
    oai.chat.completions.create(model="smollm2:135m", messages=messages, max_tokens=4, temperature=0)
    again = oai.chat.completions.create(model="smollm2:135m", messages=messages, max_tokens=4, temperature=0)
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details.cached_tokens == again.usage.prompt_tokens - 1
