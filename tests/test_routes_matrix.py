"""Every route of the app, called by every kind of caller: the expectations below are written
here, apart from the rules in server/access.py, and the list of routes comes from the app's own
route table, so a route added without a rule (or without an expectation here) fails this suite."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.auth_env import MODEL, Department, department

from bendi.config import Settings
from bendi.server.access import RULES, route_table
from bendi.server.app import create_app

#: what a route needs, by (method, path template):
#:   open: nothing; any: any credential; chat / embeddings: a key with that route family;
#:   kb: the kb family; kb-read / kb-write: read or write access to the {name} knowledge base;
#:   admin: an admin; admin-kb: an admin, and for others the {name} knowledge base is hidden
#:   unless they can read it
EXPECT: dict[tuple[str, str], str] = {
    ("GET", "/health"): "open",
    ("GET", "/"): "open",
    ("HEAD", "/"): "open",
    ("GET", "/ui"): "open",
    ("POST", "/auth/login"): "open",
    ("GET", "/auth/session"): "open",
    ("POST", "/auth/logout"): "any",
    ("GET", "/openapi.json"): "any",
    ("GET", "/docs"): "any",
    ("GET", "/docs/oauth2-redirect"): "any",
    ("GET", "/metrics"): "admin",
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "chat",
    ("POST", "/v1/responses"): "chat",
    ("POST", "/v1/embeddings"): "embeddings",
    ("GET", "/v1/models"): "any",
    ("GET", "/v1/models/{model:path}"): "any",
    ("POST", "/api/chat"): "chat",
    ("POST", "/api/generate"): "chat",
    ("POST", "/api/embed"): "embeddings",
    ("POST", "/api/embeddings"): "embeddings",
    ("GET", "/api/tags"): "any",
    ("POST", "/api/show"): "any",
    ("GET", "/api/ps"): "any",
    ("GET", "/api/version"): "any",
    ("DELETE", "/api/delete"): "admin",
    ("POST", "/api/copy"): "admin",
    ("POST", "/api/create"): "admin",
    ("POST", "/api/pull"): "admin",
    ("POST", "/kb"): "admin",
    ("GET", "/kb"): "kb",
    ("GET", "/kb/{name}"): "kb-read",
    ("DELETE", "/kb/{name}"): "admin-kb",
    ("POST", "/kb/{name}/documents"): "kb-write",
    ("GET", "/kb/{name}/documents"): "kb-read",
    ("DELETE", "/kb/{name}/documents/{document:path}"): "kb-write",
    ("POST", "/kb/{name}/search"): "kb-read",
    ("POST", "/kb/{name}/ask"): "kb-read",
    ("GET", "/console/{name:path}"): "open",
    ("GET", "/conversations"): "any",
    ("POST", "/conversations"): "any",
    ("DELETE", "/conversations"): "any",
    ("GET", "/conversations/{conversation_id}"): "any",
    ("PATCH", "/conversations/{conversation_id}"): "any",
    ("DELETE", "/conversations/{conversation_id}"): "any",
    ("GET", "/models"): "any",
    ("POST", "/models/import"): "admin",
    ("GET", "/admin/users"): "admin",
    ("POST", "/admin/users"): "admin",
    ("GET", "/admin/users/{user}"): "admin",
    ("PATCH", "/admin/users/{user}"): "admin",
    ("DELETE", "/admin/users/{user}"): "admin",
    ("GET", "/admin/groups"): "admin",
    ("POST", "/admin/groups"): "admin",
    ("DELETE", "/admin/groups/{group}"): "admin",
    ("POST", "/admin/groups/{group}/members"): "admin",
    ("DELETE", "/admin/groups/{group}/members/{user}"): "admin",
    ("GET", "/admin/keys"): "admin",
    ("POST", "/admin/keys"): "admin",
    ("DELETE", "/admin/keys/{key_id}"): "admin",
    ("GET", "/admin/grants"): "admin",
    ("POST", "/admin/grants"): "admin",
    ("DELETE", "/admin/grants/{knowledge_base}"): "admin",
    ("PUT", "/admin/knowledge-bases/{knowledge_base}/owner"): "admin",
    ("GET", "/admin/quotas"): "admin",
    ("PUT", "/admin/quotas"): "admin",
    ("DELETE", "/admin/quotas"): "admin",
    ("GET", "/admin/usage"): "admin",
    ("GET", "/admin/audit"): "admin",
    ("GET", "/admin/audit/export"): "admin",
    ("GET", "/admin/audit/verify"): "admin",
    ("GET", "/admin/audit/head"): "admin",
    ("GET", "/admin/audit/settings"): "admin",
    ("PUT", "/admin/audit/settings"): "admin",
    ("POST", "/admin/audit/prune"): "admin",
}

ALLOWED, UNAUTHENTICATED, FORBIDDEN, HIDDEN = "allowed", "401", "403", "hidden"

#: the outcome for each caller (tests/auth_env.py) by what the route needs; the {name} of
#: knowledge-base routes is "shared", which wang may read, zhao may write and li cannot see
OUTCOME: dict[str | None, dict[str, str]] = {
    None: {"open": ALLOWED},  # anything else: 401
    "member": {"open": ALLOWED, "any": ALLOWED, "chat": ALLOWED, "embeddings": ALLOWED, "kb": ALLOWED,
               "kb-read": HIDDEN, "kb-write": HIDDEN, "admin-kb": HIDDEN, "admin": FORBIDDEN},
    "reader": {"open": ALLOWED, "any": ALLOWED, "chat": ALLOWED, "embeddings": ALLOWED, "kb": ALLOWED,
               "kb-read": ALLOWED, "kb-write": FORBIDDEN, "admin-kb": FORBIDDEN, "admin": FORBIDDEN},
    "writer": {"open": ALLOWED, "any": ALLOWED, "chat": ALLOWED, "embeddings": ALLOWED, "kb": ALLOWED,
               "kb-read": ALLOWED, "kb-write": ALLOWED, "admin-kb": FORBIDDEN, "admin": FORBIDDEN},
    # chat only, one model: every knowledge base is invisible to it
    "narrow": {"open": ALLOWED, "any": ALLOWED, "chat": ALLOWED, "embeddings": FORBIDDEN, "kb": FORBIDDEN,
               "kb-read": HIDDEN, "kb-write": HIDDEN, "admin-kb": HIDDEN, "admin": FORBIDDEN},
    "admin": {need: ALLOWED for need in ("open", "any", "chat", "embeddings", "kb", "kb-read", "kb-write",
                                         "admin-kb", "admin")},
}


@pytest.fixture(scope="module")
def dept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Department]:
    home = tmp_path_factory.mktemp("matrix")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENDI_HOME", str(home / "bendi-home"))
        with department(Settings.from_env(), home) as d:
            yield d


def routes_of_app(settings: Settings) -> set[tuple[str, str]]:
    out = set()
    for entry in route_table(create_app(settings)):
        for method in entry.methods:
            if method == "HEAD" and "GET" in entry.methods:
                continue  # Starlette adds HEAD to its GET routes
            out.add((method, entry.path))
    return out


def test_every_route_has_a_rule_and_an_expectation(settings: Settings) -> None:
    routes = routes_of_app(settings)
    assert len(routes) > 50
    missing_rule = sorted(r for r in routes if r not in RULES and not r[1].startswith("/admin/"))
    assert not missing_rule, f"routes without an access rule in server/access.py: {missing_rule}"
    missing = sorted(routes - set(EXPECT))
    assert not missing, f"routes without an expectation in this test: {missing}"
    gone = sorted(set(EXPECT) - routes)
    assert not gone, f"expectations for routes the app does not have: {gone}"


def _path(template: str, dept: Department, key_id: str) -> str:
    values = {"name": "shared", "document": "manual.md", "model": MODEL, "user": "li", "group": "mining",
              "key_id": key_id, "knowledge_base": "shared", "conversation_id": "none"}
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values[m.group(1)], template)


def outcome(status: int, body: Any) -> str:
    if status == 401:
        return UNAUTHENTICATED
    if status == 403:
        return FORBIDDEN
    if status == 404 and isinstance(body, dict) and (body.get("error") or {}).get("code") == "kb_not_found":
        return HIDDEN
    return ALLOWED


def _order(route: tuple[str, str]) -> tuple[int, int]:
    # changes that remove things go last, longest paths first, so they do not pull the ground
    # from under the other calls
    return (route[0] == "DELETE", -len(route[1]))


@pytest.mark.parametrize("who", [None, "member", "reader", "writer", "narrow", "admin"])
def test_route_by_role_matrix(dept: Department, who: str | None) -> None:
    wrong = []
    key_id = dept.services.auth.directory.keys(user="li")[0]["id"]
    for method, template in sorted(EXPECT, key=_order):
        need = EXPECT[(method, template)]
        expected = OUTCOME[who].get(need, UNAUTHENTICATED)
        kwargs: dict[str, Any] = {"headers": dept.headers(who)}
        if method in ("POST", "PUT", "PATCH"):
            kwargs["json"] = {}
        resp = dept.client.request(method, _path(template, dept, key_id), **kwargs)
        try:
            body = resp.json()
        except ValueError:
            body = None
        got = outcome(resp.status_code, body)
        if got != expected:
            wrong.append(f"{method} {template}: expected {expected}, got {resp.status_code} {resp.text[:120]}")
    assert not wrong, f"caller {who}:\n" + "\n".join(wrong)


def test_a_refused_request_reads_no_body_and_is_audited(dept: Department, tmp_path: Path) -> None:
    """Refusals happen before the app: an upload to a hidden knowledge base is never parsed."""
    before = dept.services.audit.query(limit=1)[0]["seq"]
    resp = dept.client.post("/kb/secret/documents", headers=dept.headers("writer"),
                            files={"file": ("x.md", b"# injected\n\nnot allowed")})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "kb_not_found"
    docs = dept.services.kb.documents("secret")["documents"]
    assert [d["name"] for d in docs] == ["plans.md"]
    [record] = dept.services.audit.query(since=None, limit=10, before_seq=None)[:1]
    assert record["seq"] > before and record["status"] == "refused" and record["code"] == 404
    assert (record["user"], record["knowledge_base"], record["route"]) == (
        "zhao", "secret", "POST /kb/{name}/documents")
