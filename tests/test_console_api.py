"""The web console's server side without a browser: the page at / for browsers only (Ollama
clients still get their probe text), its files from the package with the headers that keep it
self-contained, the first load's size, conversations kept per caller in bendi.db, and the
Models page's JSON. The browser scenarios are in test_console_browser.py."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bendi.config import Settings
from bendi.conversations import ConversationStore
from bendi.errors import InvalidRequest, NotFound
from bendi.server.app import create_app
from bendi.server.console_routes import PROBE_TEXT, preferred_language

#: the issue's budget for the first load (page, scripts, styles), compressed as served
FIRST_LOAD_BUDGET = 300_000
BROWSER = {"accept": "text/html,application/xhtml+xml,*/*;q=0.8", "accept-encoding": "gzip"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="http://localhost") as c:
        yield c


def test_root_is_the_probe_for_api_clients_and_the_console_for_browsers(client: TestClient) -> None:
    for accept in ("*/*", "application/json", None):
        headers = {"accept": accept} if accept else {}
        probe = client.get("/", headers=headers)
        assert probe.status_code == 200 and probe.text == PROBE_TEXT, accept
    assert client.head("/").status_code == 200
    page = client.get("/", headers=BROWSER)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="module"' in page.text and "/console/" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


def test_the_old_chat_page_leads_to_the_console(client: TestClient) -> None:
    moved = client.get("/ui?q=hi&model=smollm2:135m&x=1", follow_redirects=False)
    assert moved.status_code == 307 and moved.headers["location"] == "/?q=hi&model=smollm2%3A135m"


def test_the_page_speaks_the_browsers_language() -> None:
    assert preferred_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert preferred_language("en-US,en;q=0.9,zh;q=0.8") == "en"
    assert preferred_language("") == "en"


def _local_references(text: str) -> list[str]:
    """Every script, stylesheet and module import the page and its scripts name."""
    refs = re.findall(r'(?:src|href)="(/console/[^"]+)"', text)
    refs += ["/console/js/" + m.removeprefix("./") for m in re.findall(r'from\s+"(\./[^"]+)"', text)]
    return refs


def test_everything_is_in_the_package_and_the_first_load_is_small(client: TestClient) -> None:
    page = client.get("/", headers=BROWSER)
    seen: dict[str, int] = {"/": len(gzip.compress(page.content))}
    todo = _local_references(page.text)
    assert todo, "the page names no scripts"
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        got = client.get(path, headers=BROWSER)
        assert got.status_code == 200, path
        assert got.headers["x-content-type-options"] == "nosniff"
        seen[path] = int(got.headers.get("content-length", len(got.content)))
        todo += _local_references(got.text)
    assert any(p.endswith(".css") for p in seen) and any(p.endswith("app.js") for p in seen)
    assert sum(seen.values()) < FIRST_LOAD_BUDGET, seen
    # nothing from elsewhere: no CDN, no web fonts, no remote images
    for path in seen:
        text = client.get(path).text
        assert not re.search(r"(?:src|href|url\()\s*=?\s*[\"']?(?:https?:)?//", text), path
    # an unchanged file is not sent again
    again = client.get("/console/js/app.js", headers={"if-none-match": client.get("/console/js/app.js").headers["etag"]})
    assert again.status_code == 304


def test_console_files_cannot_escape_the_package(client: TestClient) -> None:
    for path in ("/console/../../pyproject.toml", "/console/%2e%2e/__init__.py", "/console/index.html",
                 "/console/__init__.py", "/console/nope.js"):
        assert client.get(path).status_code == 404, path


def test_conversations_round_trip_per_caller(client: TestClient) -> None:
    created = client.post("/conversations", json={"model": "smollm2:135m", "settings": {"temperature": 0.2},
                                                  "messages": [{"role": "user", "content": "  你好，\n世界  "}]})
    assert created.status_code == 201
    conv = created.json()
    assert conv["title"] == "你好， 世界" and conv["settings"] == {"temperature": 0.2}
    messages = [*conv["messages"], {"role": "assistant", "content": "<b>hi</b>", "reasoning": "r", "stopped": True}]
    changed = client.patch(f"/conversations/{conv['id']}", json={"messages": messages, "title": "renamed"}).json()
    assert changed["messages"] == messages and changed["title"] == "renamed"
    listed = client.get("/conversations").json()["conversations"]
    assert [(c["id"], c["n_messages"]) for c in listed] == [(conv["id"], 2)]
    assert client.get(f"/conversations/{conv['id']}").json()["messages"][1]["stopped"] is True
    assert client.delete(f"/conversations/{conv['id']}").json() == {"deleted": conv["id"]}
    missing = client.get(f"/conversations/{conv['id']}")
    assert missing.status_code == 404 and "no conversation" in missing.json()["error"]["message"]
    bad = client.post("/conversations", json={"messages": [{"role": "robot", "content": "x"}]})
    assert bad.status_code == 400 and "role" in bad.json()["error"]["message"]
    assert client.post("/conversations", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400


def test_one_owner_never_sees_anothers_conversations(tmp_path: Path) -> None:
    store = ConversationStore(tmp_path / "bendi.db")
    mine = store.create("ann", messages=[{"role": "user", "content": "mine"}])
    store.create("bob", title="bob's")
    assert [c["title"] for c in store.summaries("ann")] == ["mine"]
    for action in (lambda: store.get("bob", mine["id"]), lambda: store.delete("bob", mine["id"]),
                   lambda: store.update("bob", mine["id"], title="stolen")):
        with pytest.raises(NotFound):
            action()
    assert store.get("ann", mine["id"])["title"] == "mine"
    with pytest.raises(InvalidRequest):
        store.update("ann", mine["id"], messages=[{"role": "user", "content": 3}])  # type: ignore[dict-item]
    assert store.get("ann", mine["id"])["messages"] == [{"role": "user", "content": "mine"}]  # nothing half-saved
    assert store.delete_all("ann") == 1 and store.summaries("ann") == [] and len(store.summaries("bob")) == 1
    store.close()


def test_models_page_reports_installed_models_with_the_plan(client: TestClient) -> None:
    report = client.get("/models").json()
    assert report["hardware"]["ram"] > 0 and report["slots"] >= 1
    bundled = next(m for m in report["installed"] if m["name"] == "smollm2:135m")
    assert bundled["size"] > 0 and bundled["quantization"] and bundled["context_length"]
    assert bundled["plan"] and bundled["plan"]["verdict"]
    assert report["catalog"] and all(p["source"] == "catalog" for p in report["catalog"])
    assert report["loaded"] == []
    missing = client.post("/models/import", json={"path": "/no/such/file.gguf", "name": "x:1"})
    assert missing.status_code in (400, 404, 422) and "file.gguf" in missing.json()["error"]["message"]
