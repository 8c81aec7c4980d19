"""Accounts, API keys, login sessions, quotas: through the real app on the fake engine, the CLI,
and bendi.db itself (what is stored, what is never stored)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from tests.auth_env import CLI, MODEL, OTHER_MODEL, PASSWORDS, Department, department
from tests.fake_engine import fake_registry, tiny_gguf

from bendi.cli.main import cli
from bendi.config import Settings
from bendi.errors import InvalidRequest, PermissionDenied
from bendi.server.app import create_app
from bendi.server.security import check_bind
from bendi.services import Services


@pytest.fixture
def dept(settings: Settings, tmp_path: Path) -> Iterator[Department]:
    with department(settings, tmp_path) as d:
        yield d


def chat(model: str = MODEL, text: str = "hello there") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def ollama_chat(model: str = MODEL) -> dict[str, Any]:
    return {**chat(model), "stream": False}


# -- when credentials are needed --------------------------------------------------------------

def test_loopback_needs_no_credential_until_an_admin_exists(settings: Settings, tmp_path: Path) -> None:
    registry, _ = fake_registry()
    services = Services.build(settings, engines=registry)
    services.store.import_file(tiny_gguf(tmp_path / "fake.gguf"), MODEL)
    with TestClient(create_app(settings, services=services), base_url="http://localhost") as client:
        # clients send placeholder keys to servers without accounts: they are not refused
        for headers in ({}, {"Authorization": "Bearer unused"}):
            assert client.post("/v1/chat/completions", json=chat(), headers=headers).status_code == 200
        assert client.get("/auth/session").json() == {"authenticated": False, "auth_required": False}
        services.auth.directory.add_user("boss", role="admin", password=PASSWORDS["boss"], actor=CLI)
        refused = client.post("/v1/chat/completions", json=chat())
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "invalid_api_key"
        assert client.post("/api/chat", json=ollama_chat()).json() == {
            "error": "missing API key: send 'Authorization: Bearer <key>'"}
        assert client.get("/health").status_code == 200  # always open
        _, key = services.auth.directory.create_key("boss", actor=CLI)
        ok = client.post("/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200
        assert client.get("/v1/models", headers={"x-api-key": key}).status_code == 200


def test_a_server_reachable_from_the_network_always_needs_credentials(settings: Settings) -> None:
    with pytest.raises(InvalidRequest, match="without authentication"):
        check_bind("0.0.0.0", None, has_admin=False)
    check_bind("0.0.0.0", None, has_admin=True)
    check_bind("0.0.0.0", "bootstrap-key")
    check_bind("127.0.0.1", None)
    wide = settings.replace(host="0.0.0.0")
    registry, _ = fake_registry()
    with TestClient(create_app(wide, services=Services.build(wide, engines=registry)), base_url="http://localhost") as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/health").status_code == 200


def test_bootstrap_key_is_an_admin(settings: Settings) -> None:
    keyed = settings.replace(api_key="s3cret-bootstrap")
    registry, _ = fake_registry()
    services = Services.build(keyed, engines=registry)
    with TestClient(create_app(keyed, services=services), base_url="http://localhost") as client:
        assert client.get("/admin/users").status_code == 401
        assert client.get("/admin/users", headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": "Bearer s3cret-bootstrap"}
        made = client.post("/admin/users", json={"name": "boss", "role": "admin", "password": "a-long-password"},
                           headers=auth)
        assert made.status_code == 201 and made.json()["role"] == "admin"
        [record] = [r for r in services.audit.query() if r["action"] == "user.add"]
        assert (record["user"], record["key_id"], record["route"]) == ("bootstrap", "bootstrap", "POST /admin/users")


# -- API keys ---------------------------------------------------------------------------------

def test_keys_are_stored_hashed_and_revoked_at_once_even_from_another_process(dept: Department) -> None:
    key = dept.keys["member"]
    key_id = key.split("_")[1]
    conn = dept.services.auth.directory.db()
    [row] = conn.execute("SELECT hash FROM api_keys WHERE id = ?", (key_id,)).fetchall()
    assert row[0] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in "\n".join(conn.iterdump())
    assert dept.client.post("/v1/chat/completions", json=chat(), headers=dept.headers("member")).status_code == 200
    dept.services.writer.flush()
    [info] = dept.services.auth.directory.keys(user="li")
    assert info["last_used"] is not None and info["status"] == "active" and info["prefix"] == f"bk_{key_id}"
    # `bendi key revoke` in another process: a second Services on the same bendi.db
    other = Services.build(dept.services.settings, engines=fake_registry()[0])
    try:
        other.auth.directory.revoke_key(f"bk_{key_id}", actor=CLI)
    finally:
        other.close()
    resp = dept.client.post("/v1/chat/completions", json=chat(), headers=dept.headers("member"))
    assert resp.status_code == 401 and resp.json()["error"]["message"] == "invalid API key"


def test_expired_keys_and_disabled_users_are_refused(dept: Department) -> None:
    conn = dept.services.auth.directory.db()
    key_id = dept.keys["reader"].split("_")[1]
    conn.execute("UPDATE api_keys SET expires_at = 1 WHERE id = ?", (key_id,))
    resp = dept.client.get("/v1/models", headers=dept.headers("reader"))
    assert resp.status_code == 401 and "expired" in resp.json()["error"]["message"]
    dept.services.auth.directory.update_user("li", disabled=True, actor=CLI)
    assert dept.client.get("/v1/models", headers=dept.headers("member")).status_code == 401
    dept.services.auth.directory.update_user("li", disabled=False, actor=CLI)
    assert dept.client.get("/v1/models", headers=dept.headers("member")).status_code == 200


def test_key_scopes_limit_models_and_route_families_in_both_dialects(dept: Department) -> None:
    narrow = dept.headers("narrow")
    assert dept.client.post("/v1/chat/completions", json=chat(), headers=narrow).status_code == 200
    denied = dept.client.post("/v1/chat/completions", json=chat(OTHER_MODEL), headers=narrow)
    assert denied.status_code == 403
    assert denied.json()["error"] == {"message": f"this credential may not use model {OTHER_MODEL}",
                                      "type": "permission_error", "param": "model", "code": "permission_denied"}
    denied = dept.client.post("/api/chat", json=ollama_chat(OTHER_MODEL), headers=narrow)
    assert denied.status_code == 403 and denied.json() == {"error": f"this credential may not use model {OTHER_MODEL}"}
    assert dept.client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}, headers=narrow).status_code == 403
    assert [m["id"] for m in dept.client.get("/v1/models", headers=narrow).json()["data"]] == [MODEL]
    assert [m["name"] for m in dept.client.get("/api/tags", headers=narrow).json()["models"]] == [MODEL]
    everything = {m["id"] for m in dept.client.get("/v1/models", headers=dept.headers("writer")).json()["data"]}
    assert {MODEL, OTHER_MODEL} <= everything
    with pytest.raises(InvalidRequest, match="not an admin"):
        dept.services.auth.directory.create_key("li", routes=("admin",), actor=CLI)


def test_the_last_admin_stays(dept: Department) -> None:
    d = dept.services.auth.directory
    for change in (lambda: d.remove_user("boss", actor=CLI), lambda: d.update_user("boss", role="member", actor=CLI),
                   lambda: d.update_user("boss", disabled=True, actor=CLI)):
        with pytest.raises(PermissionDenied, match="last admin"):
            change()
    d.add_user("deputy", role="admin", password="deputy-password", actor=CLI)
    d.update_user("boss", role="member", actor=CLI)
    assert d.user("boss")["role"] == "member"


# -- browser login ----------------------------------------------------------------------------

def test_login_sets_a_strict_httponly_cookie_and_changes_need_the_csrf_token(dept: Department) -> None:
    client = dept.client
    wrong = client.post("/auth/login", json={"username": "zhao", "password": "not-it"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    ok = client.post("/auth/login", json={"username": "zhao", "password": PASSWORDS["zhao"]})
    assert ok.status_code == 200
    cookie = ok.headers["set-cookie"].lower()
    assert "bendi_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    session = client.get("/auth/session").json()
    assert session["authenticated"] and session["user"] == "zhao" and session["via"] == "session"
    assert session["csrf_token"] == ok.json()["csrf_token"]
    assert client.get("/kb").status_code == 200  # reading needs no token
    refused = client.post("/v1/chat/completions", json=chat())
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
    refused = client.post("/v1/chat/completions", json=chat(), headers={"X-CSRF-Token": "forged"})
    assert refused.status_code == 403
    done = client.post("/v1/chat/completions", json=chat(), headers={"X-CSRF-Token": session["csrf_token"]})
    assert done.status_code == 200
    assert client.get("/admin/users").status_code == 403  # a member's session is no admin
    client.post("/auth/logout", headers={"X-CSRF-Token": session["csrf_token"]})
    assert client.get("/kb").status_code == 401
    records = dept.services.audit.query(kind="auth")
    assert [(r["action"], r["status"], r["user"]) for r in reversed(records)] == [
        ("login", "refused", "anonymous"), ("login", "ok", "zhao"), ("logout", "ok", "zhao")]


def test_login_attempts_are_rate_limited(dept: Department) -> None:
    for _ in range(5):
        assert dept.client.post("/auth/login", json={"username": "wang", "password": "guess"}).status_code == 401
    limited = dept.client.post("/auth/login", json={"username": "wang", "password": PASSWORDS["wang"]})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert limited.json()["error"]["code"] == "rate_limited"
    other = dept.client.post("/auth/login", json={"username": "li", "password": PASSWORDS["li"]})
    assert other.status_code == 200


def test_no_password_or_key_is_ever_stored_or_logged(dept: Department, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    admin = dept.headers("admin")
    made = dept.client.post("/admin/keys", json={"user": "wang", "name": "ci"}, headers=admin)
    assert made.status_code == 201
    secret = made.json()["key"]
    assert secret.startswith("bk_") and all("key" not in k for k in dept.client.get(
        "/admin/keys", headers=admin).json()["keys"])
    dept.client.post("/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {secret}"})
    dept.client.post("/admin/users", json={"name": "sun", "password": "sun-secret-pw"}, headers=admin)
    dept.client.patch("/admin/users/sun", json={"password": "sun-newer-secret"}, headers=admin)
    dept.client.post("/auth/login", json={"username": "sun", "password": "sun-newer-secret"})
    dept.client.post("/auth/login", json={"username": "sun", "password": "wrong-guess-pw"})
    dept.services.writer.flush()
    stored = "\n".join(dept.services.auth.directory.db().iterdump())
    secrets = [secret, "sun-secret-pw", "sun-newer-secret", "wrong-guess-pw", *PASSWORDS.values(),
               *dept.keys.values()]
    for text in secrets:
        assert text not in stored and text not in caplog.text
    assert "$argon2id$" in stored  # passwords are there as argon2 hashes


# -- quotas -----------------------------------------------------------------------------------

def test_requests_per_minute_answer_429_with_retry_after_in_each_dialect(dept: Department) -> None:
    dept.services.auth.directory.set_quota(user="li", requests_per_minute=2, actor=CLI)
    member = dept.headers("member")
    assert dept.client.post("/v1/chat/completions", json=chat(), headers=member).status_code == 200
    assert dept.client.post("/api/chat", json=ollama_chat(), headers=member).status_code == 200
    limited = dept.client.post("/v1/chat/completions", json=chat(), headers=member)
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    error = limited.json()["error"]
    assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
    assert "2 requests per minute for user li" in error["message"]
    limited = dept.client.post("/api/chat", json=ollama_chat(), headers=member)
    assert limited.status_code == 429 and "retry-after" in limited.headers
    assert set(limited.json()) == {"error"} and "requests per minute" in limited.json()["error"]
    # another user is not limited; the refusals are in the audit log, not in usage
    assert dept.client.post("/v1/chat/completions", json=chat(), headers=dept.headers("writer")).status_code == 200
    [usage] = dept.services.auth.quotas.usage(user="li")
    assert usage["requests"] == 2
    refused = dept.services.audit.query(user="li", status="refused")
    assert len(refused) == 2 and {r["code"] for r in refused} == {429}


def test_tokens_per_day_per_key(dept: Department) -> None:
    key_id = dept.keys["reader"].split("_")[1]
    dept.services.auth.directory.set_quota(key=f"bk_{key_id}", tokens_per_day=5, actor=CLI)
    reader = dept.headers("reader")
    first = dept.client.post("/v1/chat/completions", json=chat(text="one two three"), headers=reader)
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] > 5
    limited = dept.client.post("/v1/embeddings", json={"model": MODEL, "input": "x"}, headers=reader)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert "tokens per day for API key" in limited.json()["error"]["message"]
    rows = dept.services.auth.quotas.usage(key=key_id, by="key")
    assert rows == [{"user": "wang", "key_id": key_id, "requests": 1, "prompt_tokens": rows[0]["prompt_tokens"],
                     "completion_tokens": 3, "tokens": rows[0]["prompt_tokens"] + 3}]


# -- the CLI sets up a department --------------------------------------------------------------

def test_a_department_is_set_up_from_the_cli(settings: Settings, tmp_path: Path) -> None:
    runner = CliRunner()

    def bendi(*args: str, stdin: str | None = None) -> str:
        result = runner.invoke(cli, list(args), input=stdin)
        assert result.exit_code == 0, result.output
        return result.output

    bendi("user", "add", "boss", "--role", "admin", "--password-stdin", stdin="boss-password\n")
    bendi("group", "add", "mining")
    bendi("user", "add", "li", "--group", "mining", stdin="li-password\nli-password\n")
    bendi("user", "add", "robot", "--no-password")
    bendi("kb", "create", "safety")
    bendi("grant", "owner", "safety", "mining")
    bendi("grant", "add", "safety", "--user", "robot", "--access", "read")
    out = bendi("key", "create", "--user", "robot", "--kb", "safety", "--expires", "30d")
    key = out.splitlines()[0]
    assert key.startswith("bk_") and "not shown again" in out
    bendi("quota", "set", "--user", "robot", "--rpm", "30", "--tokens-per-day", "100000")
    users = bendi("user", "ls")
    assert "boss" in users and "admin" in users and "robot" in users
    assert "group mining" in bendi("grant", "ls", "safety") and "user robot" in bendi("grant", "ls")
    assert "bk_" + key.split("_")[1] in bendi("key", "ls", "--user", "robot")
    assert "30" in bendi("quota", "ls")
    bad = runner.invoke(cli, ["grant", "add", "nope", "--user", "li"])
    assert bad.exit_code == 1 and "knowledge base 'nope' not found" in bad.output
    bad = runner.invoke(cli, ["user", "add", "bootstrap", "--no-password"])
    assert bad.exit_code == 1 and "invalid user name" in bad.output
    # the robot's key reads the knowledge base over HTTP, and only that one
    registry, _ = fake_registry()
    services = Services.build(settings, engines=registry)
    services.kb.create("other")
    with TestClient(create_app(settings, services=services), base_url="http://localhost") as client:
        robot = {"Authorization": f"Bearer {key}"}
        listed = client.get("/kb", headers=robot).json()["knowledge_bases"]
        assert [kb["name"] for kb in listed] == ["safety"]
        assert client.post("/kb/safety/search", json={"query": "belts"}, headers=robot).status_code == 200
        assert client.post("/kb/other/search", json={"query": "belts"}, headers=robot).status_code == 404
    usage = json.loads(bendi("usage", "--by", "key", "--json"))
    assert [(u["user"], u["key_id"], u["requests"]) for u in usage] == [("robot", key.split("_")[1], 1)]
    assert "audit log verified" in bendi("audit", "verify")


def test_the_cli_is_not_limited_but_counted(dept: Department) -> None:
    from bendi.core.context import RequestContext
    from bendi.runtime.types import ChatRequest

    local = RequestContext.local("cli run")
    d = dept.services.auth.directory
    d.add_user(local.principal, password="local-password", actor=CLI)
    d.set_quota(user=local.principal, requests_per_minute=0, actor=CLI)
    _, key = d.create_key(local.principal, actor=CLI)
    over_http = dept.client.post("/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {key}"})
    assert over_http.status_code == 429
    run = dept.services.generation.generate(ChatRequest(model=MODEL, messages=chat()["messages"]), local)
    assert "".join(getattr(e, "text", "") for e in run.events) == "hello there"
    [row] = dept.services.auth.quotas.usage(user=local.principal)
    assert row["requests"] == 1
