"""A knowledge base a caller may not read does not exist for them, on every route: /kb/*, the
kb:<name> models, chat with model kb:<name> or knowledge_base=<name>, search results and
citations. "Does not exist" means the very answer a missing knowledge base gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.auth_env import CLI, MODEL, Department, department

from bendi.config import Settings


@pytest.fixture(scope="module")
def dept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Department]:
    home = tmp_path_factory.mktemp("isolation")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENDI_HOME", str(home / "bendi-home"))
        with department(Settings.from_env(), home) as d:
            yield d


QUESTION = "How often are the drive pulley bearings lubricated?"

#: every route that names a knowledge base, with a body that would work on a readable one
ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/kb/{kb}", {}),
    ("DELETE", "/kb/{kb}", {}),
    ("GET", "/kb/{kb}/documents", {}),
    ("POST", "/kb/{kb}/documents", {"files": {"file": ("x.md", b"# x\n\ntext")}}),
    ("DELETE", "/kb/{kb}/documents/plans.md", {}),
    ("POST", "/kb/{kb}/search", {"json": {"query": "drive pulley bearings"}}),
    ("POST", "/kb/{kb}/ask", {"json": {"question": QUESTION, "model": MODEL, "stream": False}}),
    ("POST", "/v1/chat/completions", {"json": {"model": "kb:{kb}", "messages": [
        {"role": "user", "content": QUESTION}]}}),
    ("POST", "/v1/chat/completions", {"json": {"model": MODEL, "knowledge_base": "{kb}", "messages": [
        {"role": "user", "content": QUESTION}]}}),
    ("POST", "/v1/chat/completions", {"json": {"model": "kb:{kb}", "stream": True, "messages": [
        {"role": "user", "content": QUESTION}]}}),
]


def _fill(value: Any, kb: str) -> Any:
    if isinstance(value, str):
        return value.replace("{kb}", kb)
    if isinstance(value, dict):
        return {k: _fill(v, kb) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, kb) for v in value]
    return value


def call(dept: Department, who: str, method: str, path: str, kwargs: dict[str, Any], kb: str) -> tuple[int, Any]:
    extra = {k: v if k == "files" else _fill(v, kb) for k, v in kwargs.items()}
    resp = dept.client.request(method, path.replace("{kb}", kb), headers=dept.headers(who), **extra)
    return resp.status_code, resp.json()


@pytest.mark.parametrize("who", ["member", "reader", "writer", "narrow"])
@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES)
def test_an_unreadable_knowledge_base_answers_exactly_like_a_missing_one(
        dept: Department, who: str, method: str, path: str, kwargs: dict[str, Any]) -> None:
    hidden = call(dept, who, method, path, kwargs, "secret")
    missing = call(dept, who, method, path, kwargs, "no-such-kb")
    if who == "narrow" and path.startswith("/kb/"):
        assert hidden[0] == missing[0] == 404
    assert hidden[0] in (403, 404), hidden
    # the same status and the same body, but for the name
    assert hidden[0] == missing[0]
    assert json.dumps(hidden[1]).replace("secret", "X") == json.dumps(missing[1]).replace("no-such-kb", "X")
    assert "plans" not in json.dumps(hidden[1]) and "300 hours" not in json.dumps(hidden[1])


def test_lists_show_only_readable_knowledge_bases(dept: Department) -> None:
    def listed(who: str) -> list[str]:
        return [kb["name"] for kb in dept.client.get("/kb", headers=dept.headers(who)).json()["knowledge_bases"]]

    assert listed("admin") == ["secret", "shared"]
    assert listed("reader") == ["shared"] and listed("writer") == ["shared"] and listed("member") == []
    # kb:<name> entries of model lists (where the server lists them) follow the same rule
    for who in ("member", "reader", "writer", "narrow"):
        models = [m["id"] for m in dept.client.get("/v1/models", headers=dept.headers(who)).json()["data"]]
        tags = [m["name"] for m in dept.client.get("/api/tags", headers=dept.headers(who)).json()["models"]]
        assert "kb:secret" not in models + tags


def test_readers_search_and_cite_only_what_they_may_read(dept: Department) -> None:
    reader = dept.headers("reader")
    hits = dept.client.post("/kb/shared/search", json={"query": "drive pulley bearings", "all": True},
                            headers=reader).json()
    assert hits["results"] and {h["document"] for h in hits["results"]} == {"manual.md"}
    answer = dept.client.post("/v1/chat/completions", headers=reader, json={
        "model": "kb:shared", "messages": [{"role": "user", "content": QUESTION}]}).json()
    assert {s["document"] for s in answer["sources"]} == {"manual.md"}
    asked = dept.client.post("/kb/shared/ask", headers=reader, json={
        "question": QUESTION, "model": MODEL, "stream": False}).json()
    assert asked["found"] and {s["document"] for s in asked["sources"]} == {"manual.md"}
    # the record of the answer names the cited documents
    dept.services.writer.flush()
    [record] = dept.services.audit.query(user="wang", kind="chat", limit=1)
    assert record["knowledge_base"] == "shared" and json.loads(record["documents"]) == ["manual.md"]


def test_write_access_is_separate_from_read_access(dept: Department, tmp_path: Path) -> None:
    upload = {"file": ("notes.md", b"# Notes\n\nBelt tension is checked weekly.\n")}
    refused = dept.client.post("/kb/shared/documents", files=upload, headers=dept.headers("reader"))
    assert refused.status_code == 403 and "write" in refused.json()["error"]["message"]
    added = dept.client.post("/kb/shared/documents", files=upload, headers=dept.headers("writer"))
    assert added.status_code == 200 and added.json()["results"][0]["status"] == "added"
    removed = dept.client.delete("/kb/shared/documents/notes.md", headers=dept.headers("writer"))
    assert removed.status_code == 200


def test_a_key_scoped_to_knowledge_bases_narrows_even_an_admin(dept: Department) -> None:
    _, key = dept.services.auth.directory.create_key("boss", knowledge_bases=("shared",), actor=CLI)
    scoped = {"Authorization": f"Bearer {key}"}
    assert [kb["name"] for kb in dept.client.get("/kb", headers=scoped).json()["knowledge_bases"]] == ["shared"]
    assert dept.client.get("/kb/secret", headers=scoped).status_code == 404
    assert dept.client.get("/kb/secret", headers=dept.headers("admin")).status_code == 200
