"""Web pages the user visits, attacking a private server from the browser: DNS rebinding (a
foreign Host), cross-site posts (a foreign Origin), form bodies a page can forge without a
preflight (text/plain, multipart). Every route comes from the app's own route table, through the
OpenAPI document it serves: a state-changing route that does not say what body it takes fails
here, and so does one that a forged request gets through.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fake_engine import fake_registry, tiny_gguf

from bendi.config import Settings
from bendi.server.access import route_table
from bendi.server.app import create_app
from bendi.server.crosssite import SiteRules, host_name
from bendi.services import Services

MODEL = "fake:1"
ORIGIN = "http://127.0.0.1:11435"
STATE_CHANGING = {"post", "put", "patch", "delete"}
#: a value for each path parameter, so the request reaches a real route (others: "someone")
PATH_VALUES = {"name": "docs", "model": MODEL, "document": "notes.txt", "knowledge_base": "docs"}


@dataclass
class Env:
    client: TestClient
    services: Services
    doc: dict[str, Any]
    #: a value for each path parameter that names something that exists
    values: dict[str, str]
    #: a GGUF file on the server's disk (what /models/import would register)
    gguf: str


def make_env(settings: Settings, tmp_path: Path) -> Iterator[Env]:
    registry, _ = fake_registry()
    services = Services.build(settings, engines=registry)
    gguf = tiny_gguf(tmp_path / "fake.gguf")
    services.store.import_file(gguf, MODEL)
    with TestClient(create_app(settings, services=services), base_url=ORIGIN) as client:
        # the console's chat history: one conversation a forged request could change or delete
        conversation = client.post("/conversations", json={"title": "mine"}).json()["id"]
        yield Env(client, services, client.get("/openapi.json").json(),
                  {**PATH_VALUES, "conversation_id": conversation}, str(gguf))


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> Iterator[Env]:
    yield from make_env(settings, tmp_path)


def operations(env: Env, only_state_changing: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, concrete path, operation) for every route in the served document."""
    out = []
    for template, ops in env.doc["paths"].items():
        path = template.format_map(collections.defaultdict(lambda: "someone", env.values))
        for method, op in ops.items():
            if not only_state_changing or method in STATE_CHANGING:
                out.append((method.upper(), path, op))
    return out


def plausible_body(env: Env) -> dict[str, Any]:
    """A body the route would accept: the fields its schema requires, with harmless values."""
    return {"path": env.gguf, "title": "planted", "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "prompt": "hi",
            "input": "hi", "name": "stolen", "source": MODEL, "destination": "stolen:copy",
            "query": "secret", "question": "secret?", "from": MODEL, "role": "admin", "password": "attacker1",
            "username": "someone", "users": ["someone"], "group": "g", "access": "write",
            "knowledge_base": "docs", "older_than": "0s", "record_text": True}


def state(env: Env) -> tuple[list[str], list[str], list[str], Any]:
    return ([str(r.name) for r in env.services.store.list()],
            [kb["name"] for kb in env.services.kb.list_all()],
            [user["name"] for user in env.services.auth.directory.users()],
            env.client.get("/conversations").json())


def assert_refused(response: Any, path: str, status: int = 403) -> None:
    assert response.status_code == status, (path, response.status_code, response.text)
    if response.request.method == "HEAD":
        return
    body = response.json()
    if path.startswith("/api/"):
        assert set(body) == {"error"} and isinstance(body["error"], str)
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}


def test_every_state_changing_route_says_what_it_takes(env: Env) -> None:
    """The rule for each route comes from the route itself; a new one without it fails here."""
    state_changing = operations(env, only_state_changing=True)
    assert len(state_changing) >= 15
    for method, path, op in state_changing:
        media = op.get("x-bendi-body")
        assert media in ("application/json", "multipart/form-data", "none"), (method, path)
        if media != "none":
            assert list(op["requestBody"]["content"]) == [media], (method, path)
            assert {"403", "413", "415"} <= set(op["responses"]), (method, path)


def test_dns_rebinding_a_foreign_host_is_refused_on_every_route(env: Env) -> None:
    before = state(env)
    for method, path, op in operations(env):
        for host in ("evil.example", "evil.example:11435", "127.0.0.1.evil.example", "localhost.evil.example"):
            kwargs: dict[str, Any] = {"headers": {"Host": host}}
            if "requestBody" in op:
                kwargs["json"] = plausible_body(env)
            assert_refused(env.client.request(method, path, **kwargs), path)
    assert state(env) == before


def test_a_foreign_origin_may_change_nothing(env: Env) -> None:
    before = state(env)
    for method, path, op in operations(env, only_state_changing=True):
        for origin in ("http://evil.example", "https://evil.example", "null", "http://127.0.0.1.evil.example"):
            kwargs: dict[str, Any] = {"headers": {"Origin": origin}}
            if op.get("x-bendi-body") == "application/json":
                kwargs["json"] = plausible_body(env)
            elif op.get("x-bendi-body") == "multipart/form-data":
                kwargs["files"] = {"file": ("evil.txt", b"planted text", "text/plain")}
            assert_refused(env.client.request(method, path, **kwargs), path)
        # browsers that send no Origin still say where the request came from
        refused = env.client.request(method, path, headers={"Sec-Fetch-Site": "cross-site"})
        assert_refused(refused, path)
    assert state(env) == before


def test_bodies_a_form_can_forge_are_415_on_json_routes(env: Env) -> None:
    """An HTML form posts text/plain (whose body can be made to look like JSON) or multipart
    without a preflight; a JSON route refuses both, even without an Origin (old browsers)."""
    before = state(env)
    json_routes = [(m, p, op) for m, p, op in operations(env, only_state_changing=True)
                   if op.get("x-bendi-body") == "application/json"]
    assert json_routes
    for method, path, _op in json_routes:
        body = json.dumps(plausible_body(env))
        for media in ("text/plain", "text/plain;charset=UTF-8"):
            res = env.client.request(method, path, content=body, headers={"Content-Type": media})
            assert_refused(res, path, 415)
        multipart = env.client.request(method, path, files={"file": ("x.json", body.encode(), "application/json")})
        assert_refused(multipart, path, 415)
    assert state(env) == before


def test_the_upload_route_takes_only_multipart(env: Env) -> None:
    env.services.kb.create("docs")
    for media in ("text/plain", "application/json", "application/x-www-form-urlencoded"):
        res = env.client.post("/kb/docs/documents", content=b"file=planted", headers={"Content-Type": media})
        assert_refused(res, "/kb/docs/documents", 415)
    assert env.services.kb.documents("docs")["documents"] == []
    ok = env.client.post("/kb/docs/documents", files={"file": ("notes.txt", b"Pumps need grease.", "text/plain")})
    assert ok.status_code == 200, ok.text


def test_the_console_and_other_undocumented_routes_follow_the_host_rule(env: Env) -> None:
    """Routes left out of the OpenAPI document (the console's page and files, the old /ui, the
    document itself) are behind the same rule: a rebound name reads nothing, a loopback one does."""
    documented = set(env.doc["paths"])
    routes = [r for r in route_table(env.client.app) if re.sub(r"{(\w+):\w+}", r"{\1}", r.path) not in documented]
    assert {"/", "/ui", "/console/{name:path}", "/openapi.json"} <= {r.path for r in routes}
    browser = {"Accept": "text/html"}
    for route in routes:
        path = route.path.replace("{name:path}", "js/app.js")
        for method in sorted(route.methods or ()):
            refused = env.client.request(method, path, headers={**browser, "Host": "evil.example"})
            assert_refused(refused, path)
            assert "<html" not in refused.text.lower()
            ok = env.client.request(method, path, headers={**browser, "Host": "localhost:11435"},
                                    follow_redirects=False)
            assert ok.status_code < 400, (method, path, ok.status_code)


def test_what_stays_allowed(env: Env) -> None:
    """Clients that are not browsers, the server's own pages, loopback pages, desktop apps, and
    `curl -d` (which labels JSON as a form)."""
    copy = {"source": MODEL, "destination": "mine:copy"}
    assert env.client.post("/api/copy", json=copy).status_code == 200
    for origin in (ORIGIN, "http://localhost:3000", "http://[::1]:8080", "app://.", "tauri://localhost",
                   "vscode-webview://abc"):
        res = env.client.post("/api/copy", json=copy, headers={"Origin": origin})
        assert res.status_code == 200, (origin, res.text)
    curl = env.client.post("/api/show", content=json.dumps({"model": MODEL}),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert curl.status_code == 200, curl.text
    for host in ("localhost", "LOCALHOST.:11435", "127.0.0.2", "[::1]:11435", "studio.localhost"):
        assert env.client.get("/api/tags", headers={"Host": host}).status_code == 200, host


def test_settings_allow_an_origin_and_a_host(settings: Settings, tmp_path: Path) -> None:
    configured = settings.replace(cors_origins="https://app.example, http://10.0.0.5:8080",
                                  allowed_hosts="bendi.lan")
    for env in make_env(configured, tmp_path):
        copy = {"source": MODEL, "destination": "from-app:copy"}
        assert env.client.post("/api/copy", json=copy, headers={"Origin": "https://app.example"}).status_code == 200
        assert env.client.get("/api/tags", headers={"Host": "bendi.lan:11435"}).status_code == 200
        assert env.client.get("/api/tags", headers={"Host": "other.lan"}).status_code == 403
        evil = env.client.post("/api/copy", json=copy, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403


def test_the_rules_from_settings() -> None:
    loopback = SiteRules.from_settings(Settings(host="127.0.0.1"))
    assert loopback.host_allowed("localhost:11435") and not loopback.host_allowed("evil.example")
    bound = SiteRules.from_settings(Settings(host="192.168.1.5", api_key="k"))
    assert bound.host_allowed("192.168.1.5:11435") and not bound.host_allowed("evil.example")
    everywhere = SiteRules.from_settings(Settings(host="0.0.0.0", api_key="k"))
    assert everywhere.host_allowed("bendi.corp.example")  # the key protects it; names are many
    listed = SiteRules.from_settings(Settings(host="0.0.0.0", api_key="k", allowed_hosts="bendi.corp.example"))
    assert listed.host_allowed("bendi.corp.example") and not listed.host_allowed("evil.example")
    anything = SiteRules.from_settings(Settings(allowed_hosts="*", cors_origins="*"))
    assert anything.host_allowed("evil.example") and anything.origin_allowed("https://evil.example", None)
    assert [host_name(h) for h in ("[::1]:80", "LocalHost.", "example.com:8080", "::1")] == [
        "::1", "localhost", "example.com", "::1"]
    assert loopback.refusal("GET", {"host": "localhost", "origin": "https://evil.example"}) is None  # reads


def test_metrics_count_every_response_refusals_and_server_errors_included(settings: Settings,
                                                                           tmp_path: Path) -> None:
    """A 500 from a route that fails, a 413 and a 403 from the middleware: all counted by status."""
    registry, _ = fake_registry()
    services = Services.build(settings.replace(max_request_bytes=1000), engines=registry)
    app = create_app(settings.replace(max_request_bytes=1000), services=services)

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom, methods=["GET"])
    with TestClient(app, base_url=ORIGIN, raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500
        assert client.post("/api/show", content=b"x" * 2000).status_code == 413
        assert client.get("/api/tags", headers={"Host": "evil.example"}).status_code == 403
        assert client.get("/api/tags").status_code == 200
        counts: dict[tuple[str, str], float] = {}
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("bendi_http_requests_total{"):
                labels = dict(part.split("=", 1) for part in line[line.index("{") + 1:line.index("}")].split(","))
                key = (labels["route"].strip('"'), labels["status"].strip('"'))
                counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    assert counts[("/boom", "500")] == 1, counts
    assert counts[("unmatched", "413")] == 1, counts  # refused before routing
    assert sum(v for (_, status), v in counts.items() if status == "403") == 1, counts
    assert counts[("/api/tags", "200")] == 1, counts
