"""Answering from a knowledge base on the real bundled model, and the knowledge-base HTTP routes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bendi.config import Settings
from bendi.core.context import RequestContext
from bendi.core.observe import GenerationRecord
from bendi.kb.answer import build_messages, citations
from bendi.kb.demo import ensure_demo_kb
from bendi.runtime.types import Done, TextDelta
from bendi.services import Services

CLI = RequestContext.local("test")

HANDBOOK = (
    "# 井下安全规程\n\n## 第二章 瓦斯管理\n\n"
    "工作面瓦斯浓度达到1.5%时，必须停止工作，撤出人员，切断电源。\n\n"
    "## Conveyor\n\nLubricate the drive pulley bearings every 500 operating hours with lithium grease.\n"
)


class Recorder:
    """An observer that keeps every record."""

    wants_text = True

    def __init__(self) -> None:
        self.records: list[GenerationRecord] = []

    def admit(self, admission: object) -> None:
        return None

    def record(self, record: GenerationRecord) -> None:
        self.records.append(record)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = Services.build(settings)
    yield svc
    svc.close()


@pytest.mark.slow
def test_answer_streams_on_bundled_model_with_numbered_sources(services: Services, tmp_path: Path) -> None:
    (tmp_path / "rules.md").write_text(HANDBOOK, encoding="utf-8")
    services.kb.create("t")
    services.kb.add_paths("t", [tmp_path / "rules.md"])
    recorder = Recorder()
    services.generation.observers.add(recorder)
    run = services.generation.ask_blocking(
        "t", CLI, question="How often should the drive pulley bearings be lubricated?",
        model="smollm2:135m", max_tokens=40, options={"temperature": 0})
    assert run.model == "smollm2:135m"
    assert run.sources[0].document == "rules.md" and run.sources[0].section.endswith("Conveyor")
    events = list(run.events)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text.strip() and isinstance(events[-1], Done) and events[-1].usage.prompt_tokens > 50
    # one record for the answer, and the documents it names are the ones its [n] citations number
    [record] = recorder.records
    assert (record.status, record.knowledge_base, record.model) == ("ok", "t", "smollm2:135m")
    assert record.answer == text and record.completion_tokens == events[-1].usage.completion_tokens
    cited = citations(text, len(run.sources))
    assert record.documents == list(dict.fromkeys(run.sources[n - 1].document for n in cited))
    prompt = build_messages("q?", run.sources)[-1]["content"]
    assert prompt.startswith("Sources:\n\n[1] (rules.md, § 井下安全规程 > Conveyor)")


def test_nothing_relevant_answers_not_found_without_a_model(services: Services, tmp_path: Path) -> None:
    (tmp_path / "rules.md").write_text(HANDBOOK, encoding="utf-8")
    services.kb.create("t")
    services.kb.add_paths("t", [tmp_path / "rules.md"])
    recorder = Recorder()
    services.generation.observers.add(recorder)
    run = services.generation.ask_blocking("t", CLI, question="梅西在哪一年获得世界杯冠军？", model="no-such-model")
    events = list(run.events)
    assert run.sources == []
    assert [type(e) for e in events] == [TextDelta, Done]
    assert events[0].text == "知识库中没有找到相关内容。"  # type: ignore[union-attr]
    assert services.models.loaded() == []
    assert [(r.status, r.model, r.documents) for r in recorder.records] == [("ok", None, [])]
    services.kb.update_settings("t", top_k=3)
    english = services.generation.ask_blocking("t", CLI, question="Who won the football world cup in 2022?",
                                               model="no-such-model",
                                               not_found="Nothing about that in our documents.")
    assert [e.text for e in english.events if isinstance(e, TextDelta)] == ["Nothing about that in our documents."]


def test_demo_knowledge_base_builds_and_answers_from_it(services: Services) -> None:
    assert ensure_demo_kb(services) == "demo"
    assert ensure_demo_kb(services) == "demo"  # second start: all unchanged
    docs = {d["name"]: d for d in services.kb.documents("demo")["documents"]}
    assert set(docs) == {"bx200-conveyor-manual.pdf", "煤矿安全手册.md", "通风设备点检表.docx"}
    hit = services.kb.search("demo", "How often should the drive pulley bearings be lubricated?").hits[0]
    assert (hit.document, hit.page) == ("bx200-conveyor-manual.pdf", 2)
    zh = services.kb.search("demo", "瓦斯浓度达到1.5%时应该怎么办？").hits[0]
    assert zh.document == "煤矿安全手册.md" and "撤出人员" in zh.text


@pytest.mark.slow
def test_http_routes_and_openai_chat_against_a_knowledge_base(settings: Settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from bendi.server.app import create_app

    app = create_app(settings)
    with TestClient(app, base_url="http://localhost") as client:
        assert client.post("/kb", json={"name": "web"}).status_code == 201
        assert client.post("/kb", json={"name": "web"}).json()["error"]["code"] == "conflict"
        up = client.post("/kb/web/documents", files=[
            ("file", ("rules.md", HANDBOOK.encode(), "text/markdown")),
            ("file", ("bad.pdf", b"not a pdf", "application/pdf")),
        ])
        assert up.status_code == 207
        assert [(r["name"], r["status"]) for r in up.json()["results"]] == [("rules.md", "added"), ("bad.pdf", "failed")]
        assert [d["name"] for d in client.get("/kb/web/documents").json()["documents"]] == ["rules.md"]
        assert client.get("/kb").json()["knowledge_bases"][0]["documents"] == 1
        # the server embeds the new document's chunks in the background; progress is visible
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (client.get("/kb/web").json()["vectors"]["pending"]
                                               or client.get("/kb/web").json()["vectors"]["running"]):
            time.sleep(0.1)
        assert client.get("/kb/web").json()["vectors"] == {"done": 2, "pending": 0, "running": False, "error": None}

        found = client.post("/kb/web/search", json={"query": "瓦斯浓度达到多少必须停止工作"}).json()
        assert found["found"] and found["results"][0]["document"] == "rules.md"

        with client.stream("POST", "/kb/web/ask", json={"question": "When must bearings be lubricated?",
                                                        "max_tokens": 16, "temperature": 0}) as resp:
            lines = [json.loads(x) for x in resp.iter_lines() if x]
        assert lines[0]["type"] == "sources" and lines[0]["sources"][0]["number"] == 1
        assert any(x["type"] == "text" for x in lines) and lines[-1]["type"] == "done"
        done = lines[-1]
        assert {"cited_sources", "grounded", "unsupported"} <= set(done)
        for cited in done["cited_sources"]:  # whatever the small model cites is located and quoted
            assert cited["document"] == "rules.md" and cited["quote"] in HANDBOOK

        chat = client.post("/v1/chat/completions", json={
            "model": "kb:web", "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "When must the drive pulley bearings be lubricated?"}]}).json()
        assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["content"]
        assert chat["sources"][0]["document"] == "rules.md"
        nf = client.post("/v1/chat/completions", json={
            "model": "smollm2:135m", "knowledge_base": "web",
            "messages": [{"role": "user", "content": "梅西在哪一年获得世界杯冠军？"}]}).json()
        assert nf["choices"][0]["message"]["content"] == "知识库中没有找到相关内容。" and nf["sources"] == []

        missing = client.post("/kb/nope/search", json={"query": "x"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "kb_not_found"
        assert client.delete("/kb/web/documents/rules.md").json() == {"deleted": "rules.md", "chunks": 2}
        assert client.delete("/kb/web").status_code == 200
