"""Both dialects, every generation route, driven by a fake engine: response shapes, streams that
fail half-way, error shapes, and the observer hook seeing every request exactly once.

The real-model tests (test_server.py with the official clients) check the same routes end to end;
these pin the shapes without a model, so they run in a second."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.fake_engine import FakeEngine, fake_registry, fake_services, tiny_gguf

from bendi.config import Settings
from bendi.core.observe import Admission, GenerationRecord
from bendi.errors import RateLimited
from bendi.server.app import create_app
from bendi.services import Services

MODEL = "fake:1"


class Recorder:
    """An observer that keeps every record and can refuse requests."""

    wants_text = True

    def __init__(self) -> None:
        self.records: list[GenerationRecord] = []
        self.admitted: list[Admission] = []
        self.refuse = False

    def admit(self, admission: Admission) -> None:
        if self.refuse:
            raise RateLimited("quota used up for today")
        self.admitted.append(admission)

    def record(self, record: GenerationRecord) -> None:
        self.records.append(record)


@dataclass
class Env:
    client: TestClient
    services: Services
    engine: FakeEngine
    recorder: Recorder


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> Iterator[Env]:
    registry, engine = fake_registry()
    services = fake_services(settings, registry)
    services.store.import_file(tiny_gguf(tmp_path / "fake.gguf"), MODEL, system="Be brief.",
                               parameters={"temperature": 0.3, "top_k": 7})
    recorder = Recorder()
    services.generation.observers.add(recorder)
    with TestClient(create_app(settings, services=services), base_url="http://localhost") as client:
        yield Env(client, services, engine, recorder)


def sse_events(text: str) -> list[Any]:
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


# -- OpenAI ------------------------------------------------------------------------------------

def test_openai_chat_whole_and_streamed(env: Env) -> None:
    body = env.client.post("/v1/chat/completions", json=chat("hello there world")).json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["system_fingerprint"].startswith("bendi-")
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "hello there world"},
                                "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 3

    resp = env.client.post("/v1/chat/completions",
                           json=chat("think", stream=True, stream_options={"include_usage": True}))
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["delta"] == {"reasoning_content": "pondering", "reasoning": "pondering"}
    assert events[2]["choices"][0]["delta"] == {"content": "done"}
    assert events[3]["choices"][0]["finish_reason"] == "stop"
    assert events[4]["choices"] == [] and events[4]["usage"]["completion_tokens"] == 1
    assert events[5] == "[DONE]" and len(events) == 6


def test_openai_chat_stream_that_fails_midway_ends_with_an_error_event(env: Env) -> None:
    resp = env.client.post("/v1/chat/completions", json=chat("fail after 2", stream=True))
    assert resp.status_code == 200
    events = sse_events(resp.text)
    assert [e["choices"][0]["delta"] for e in events[1:3]] == [{"content": "w0 "}, {"content": "w1 "}]
    assert events[3] == {"error": {"message": "the fake engine failed on purpose", "type": "server_error",
                                   "param": None, "code": "engine_error"}}
    assert events[4] == "[DONE]" and len(events) == 5
    [record] = env.recorder.records
    assert record.status == "error" and record.error is not None and record.error.code == "engine_error"


def test_openai_completions_and_length_finish(env: Env) -> None:
    body = env.client.post("/v1/completions", json={"model": MODEL, "prompt": "a b c d", "max_tokens": 2,
                                                    "echo": True}).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "a b c d" + "a b" and body["choices"][0]["finish_reason"] == "length"
    resp = env.client.post("/v1/completions", json={"model": MODEL, "prompt": "x y", "stream": True})
    events = sse_events(resp.text)
    assert [e["choices"][0]["text"] for e in events[:-2]] == ["x", " y"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and events[-1] == "[DONE]"


def test_openai_embeddings_float_and_base64(env: Env) -> None:
    body = env.client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "bb"]}).json()
    assert body["object"] == "list" and body["model"] == MODEL and len(body["data"]) == 2
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    packed = env.client.post("/v1/embeddings", json={"model": MODEL, "input": "a",
                                                     "encoding_format": "base64"}).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert len(raw) == 4 * len(body["data"][0]["embedding"])
    assert [(r.kind, r.status, r.prompt_tokens) for r in env.recorder.records] == [
        ("embedding", "ok", 3), ("embedding", "ok", 1)]


def test_model_defaults_are_applied_under_the_request(env: Env) -> None:
    env.client.post("/v1/chat/completions", json=chat("hi", temperature=0.9))
    [record] = env.recorder.records
    assert record.prompt[0] == {"role": "system", "content": "Be brief."}  # the model's default system
    env.client.post("/v1/chat/completions", json={"model": MODEL, "messages": [
        {"role": "system", "content": "Mine."}, {"role": "user", "content": "hi"}]})
    assert env.recorder.records[1].prompt[0] == {"role": "system", "content": "Mine."}


# -- Ollama ------------------------------------------------------------------------------------

def test_parallel_tool_calls_reaches_the_engine_from_both_openai_routes(env: Env) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    env.client.post("/v1/chat/completions", json=chat("hi", tools=tools))
    seen = env.engine.loaded[0].requests
    assert seen[-1].parallel_tool_calls is True  # OpenAI's default
    env.client.post("/v1/chat/completions", json=chat("hi", tools=tools, parallel_tool_calls=False))
    assert seen[-1].parallel_tool_calls is False and seen[-1].tools
    env.client.post("/v1/responses", json={"model": MODEL, "input": "hi", "parallel_tool_calls": False,
                                           "tools": [{"type": "function", "name": "get_weather",
                                                      "parameters": {"type": "object"}}]})
    assert seen[-1].parallel_tool_calls is False and seen[-1].tools


def test_ollama_chat_and_generate_whole_and_streamed(env: Env) -> None:
    body = env.client.post("/api/chat", json={**chat("hi you"), "stream": False}).json()
    assert body["model"] == MODEL and body["done"] is True and body["done_reason"] == "stop"
    assert body["message"] == {"role": "assistant", "content": "hi you"}
    assert body["eval_count"] == 2 and body["prompt_eval_count"] > 0 and body["total_duration"] > 0

    lines = [json.loads(x) for x in env.client.post("/api/chat", json={**chat("think"), "think": True}).text.splitlines()]
    assert lines[0]["message"] == {"role": "assistant", "content": "", "thinking": "pondering"}
    assert lines[1]["message"]["content"] == "done" and lines[-1]["done"] is True

    gen = env.client.post("/api/generate", json={"model": MODEL, "prompt": "one two", "stream": False}).json()
    assert gen["response"] == "one two" and gen["done"] is True
    lines = [json.loads(x) for x in env.client.post("/api/generate", json={"model": MODEL, "prompt": "one two"}).text.splitlines()]
    assert "".join(x["response"] for x in lines) == "one two" and lines[-1]["eval_count"] == 2


def test_ollama_stream_that_fails_midway_ends_with_an_error_line(env: Env) -> None:
    resp = env.client.post("/api/chat", json=chat("fail after 1"))
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(x) for x in resp.text.splitlines()]
    assert lines[0]["message"]["content"] == "w0 "
    assert lines[-1] == {"error": "the fake engine failed on purpose"} and len(lines) == 2


def test_ollama_load_unload_embed_and_ps(env: Env) -> None:
    loaded = env.client.post("/api/generate", json={"model": MODEL}).json()
    assert loaded["done_reason"] == "load" and loaded["model"] == MODEL
    assert [m["name"] for m in env.client.get("/api/ps").json()["models"]] == [MODEL]
    embed = env.client.post("/api/embed", json={"model": MODEL, "input": ["x", "yy"]}).json()
    assert len(embed["embeddings"]) == 2 and embed["prompt_eval_count"] == 3
    old = env.client.post("/api/embeddings", json={"model": MODEL, "prompt": "x"}).json()
    assert old["embedding"] == embed["embeddings"][0]
    gone = env.client.post("/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0}).json()
    assert gone["done_reason"] == "unload" and env.client.get("/api/ps").json()["models"] == []
    assert env.engine.loaded[0].closed


# -- errors, admission, observation ------------------------------------------------------------

@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", chat("hi")), ("/v1/completions", {"prompt": "hi"}),
    ("/v1/embeddings", {"input": "hi"}), ("/api/chat", chat("hi")), ("/api/generate", {"prompt": "hi"}),
    ("/api/embed", {"input": "hi"}), ("/api/embeddings", {"prompt": "hi"}),
])
def test_unknown_model_and_refusal_in_each_dialect(env: Env, path: str, body: dict[str, Any]) -> None:
    resp = env.client.post(path, json={**body, "model": "nope"})
    assert resp.status_code == 404
    error = resp.json()["error"]
    if path.startswith("/api/"):
        assert isinstance(error, str) and "nope" in error
    else:
        assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    env.recorder.refuse = True
    refused = env.client.post(path, json={**body, "model": MODEL})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "quota used up" in json.dumps(refused.json())
    assert [r.status for r in env.recorder.records] == ["refused"]
    assert env.engine.loaded == []  # refused before any model was loaded


def test_every_generation_is_observed_exactly_once(env: Env) -> None:
    c = env.client
    c.post("/v1/chat/completions", json=chat("a b"))
    c.post("/v1/chat/completions", json=chat("a b", stream=True))
    c.post("/v1/chat/completions", json=chat("fail after 1", stream=True))
    c.post("/v1/completions", json={"model": MODEL, "prompt": "p"})
    c.post("/api/chat", json=chat("a"))
    c.post("/api/generate", json={"model": MODEL, "prompt": "p", "stream": False})
    c.post("/api/embed", json={"model": MODEL, "input": "e"})
    c.post("/v1/chat/completions", json={"model": MODEL, "messages": []})  # invalid: never admitted
    statuses = [(r.kind, r.status) for r in env.recorder.records]
    assert statuses == [("chat", "ok"), ("chat", "ok"), ("chat", "error"), ("completion", "ok"),
                        ("chat", "ok"), ("chat", "ok"), ("embedding", "ok")]
    assert len(env.recorder.admitted) == 7
    first = env.recorder.records[0]
    assert first.context.route == "POST /v1/chat/completions" and first.context.principal == "anonymous"
    assert first.context.client and first.answer == "a b" and first.model == MODEL and first.latency > 0
    assert env.services.models.loaded()[0].model.busy == 0  # every run released its model


def test_metrics_count_generations_through_the_hook(env: Env) -> None:
    env.client.post("/v1/chat/completions", json=chat("a b c"))
    env.client.post("/api/generate", json={"model": MODEL, "prompt": "d e", "stream": False})
    text = env.client.get("/metrics").text
    assert f'bendi_output_tokens_total{{model="{MODEL}"}} 5.0' in text
    assert f'bendi_time_to_first_token_seconds_count{{model="{MODEL}"}} 2.0' in text
    assert f'bendi_queue_depth{{model="{MODEL}"}} 0.0' in text


def test_knowledge_base_answers_take_the_same_path(env: Env, tmp_path: Path) -> None:
    (tmp_path / "manual.md").write_text("# Conveyor\n\nLubricate the drive pulley bearings every 500 "
                                        "operating hours with lithium grease.\n", encoding="utf-8")
    env.services.kb.create("docs")
    env.services.kb.add_paths("docs", [tmp_path / "manual.md"])
    # the fake model answers a knowledge-base prompt with "Grease it [1]. Also [2]."
    question = [{"role": "user", "content": "How often are the drive pulley bearings lubricated?"}]
    body = env.client.post("/v1/chat/completions", json={
        "model": MODEL, "knowledge_base": "docs", "messages": question, "top_k": 3}).json()
    assert body["choices"][0]["message"]["content"] == "Grease it [1]. Also [2]."
    assert body["model"] == MODEL and body["sources"][0]["document"] == "manual.md"
    [record] = env.recorder.records
    assert (record.knowledge_base, record.model, record.status) == ("docs", MODEL, "ok")
    assert record.documents == ["manual.md"]  # [2] names no source: only one was found
    text = env.client.get("/metrics").text
    assert f'bendi_time_to_first_token_seconds_count{{model="{MODEL}"}} 1.0' in text
    resp = env.client.post("/kb/docs/ask", json={"question": "lubricate drive pulley bearings", "model": MODEL})
    lines = [json.loads(x) for x in resp.text.splitlines()]
    assert lines[0]["type"] == "sources" and lines[0]["model"] == MODEL and lines[-1]["type"] == "done"
    assert len(env.recorder.records) == 2


def test_body_limit_holds_for_a_streamed_body_without_length(settings: Settings) -> None:
    small = settings.replace(max_request_bytes=1000)
    registry, _ = fake_registry()
    app = create_app(small, services=fake_services(small, registry))

    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length for the guard to read
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(50):
            yield b"x" * 100
        yield b'"}]}'

    with TestClient(app, base_url="http://localhost") as client:
        openai = client.post("/v1/chat/completions", content=chunks(),
                             headers={"content-type": "application/json"})
        assert openai.status_code == 413
        assert openai.json()["error"]["code"] == "request_too_large"
        ollama = client.post("/api/chat", content=chunks(), headers={"content-type": "application/json"})
        assert ollama.status_code == 413 and ollama.json() == {"error": "request body larger than 1000 bytes"}
        sized = client.post("/api/chat", content=b"x" * 2000)  # with Content-Length: refused up front
        assert sized.status_code == 413


def test_knowledge_base_sources_are_the_ones_that_fit_the_context(settings: Settings, tmp_path: Path) -> None:
    small = settings.replace(ctx=800)  # room for the instructions, the answer and about one source
    registry, engine = fake_registry()
    services = fake_services(small, registry)
    services.store.import_file(tiny_gguf(tmp_path / "fake.gguf"), MODEL)
    services.kb.create("docs")
    paragraphs = [f"## Bearing {i}\n\nLubricate the drive pulley bearing {i} every 500 hours with "
                  f"lithium grease, then check bearing {i} for noise and heat." for i in range(6)]
    (tmp_path / "manual.md").write_text("# Conveyor\n\n" + "\n\n".join(paragraphs), encoding="utf-8")
    services.kb.add_paths("docs", [tmp_path / "manual.md"])
    with TestClient(create_app(small, services=services), base_url="http://localhost") as client:
        body = client.post("/v1/chat/completions", json={
            "model": MODEL, "knowledge_base": "docs",
            "messages": [{"role": "user", "content": "How often is the drive pulley bearing lubricated?"}],
        }).json()
    prompt = str((engine.loaded[0].requests[-1].messages or [])[-1]["content"])
    numbered = [n for n in range(1, 10) if f"[{n}] (" in prompt]
    assert 1 <= len(body["sources"]) < 6 and numbered == list(range(1, len(body["sources"]) + 1))
