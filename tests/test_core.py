"""The generation service without HTTP: cancelled runs, the blocking bridge of an async-only
engine, refusals, and that a run always releases its model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.fake_engine import fake_registry, fake_services, tiny_gguf
from tests.test_shapes import MODEL, Recorder

from bendi.config import Settings
from bendi.core.collect import collect
from bendi.core.context import RequestContext
from bendi.errors import EngineError, RateLimited
from bendi.runtime.types import ChatRequest, Done, TextDelta
from bendi.services import Services

CTX = RequestContext.local("test")


@pytest.fixture
def services(settings: Settings, tmp_path: Path) -> Services:
    registry, _ = fake_registry()
    services = fake_services(settings, registry)
    services.store.import_file(tiny_gguf(tmp_path / "fake.gguf"), MODEL, parameters={"top_k": 7})
    return services


def ask(content: str, **options: object) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=[{"role": "user", "content": content}], options=dict(options))


def test_blocking_run_through_an_async_only_engine(services: Services) -> None:
    recorder = Recorder()
    services.generation.observers.add(recorder)
    run = services.generation.generate(ask("one two three", temperature=0.5), CTX)
    result = collect(run.events)
    assert result.text == "one two three" and result.done.finish_reason == "stop"
    [record] = recorder.records
    assert (record.status, record.completion_tokens, record.context.route) == ("ok", 3, "test")
    # one place merges the model's defaults with what the request set
    loaded = services.models.loaded()[0]
    assert loaded.model.busy == 0


def test_closing_a_run_cancels_it_records_it_once_and_releases_the_model(services: Services) -> None:
    recorder = Recorder()
    services.generation.observers.add(recorder)
    run = services.generation.generate(ask("a b c d e f"), CTX)
    assert isinstance(next(run.events), TextDelta)
    run.events.close()  # type: ignore[attr-defined]
    assert [r.status for r in recorder.records] == ["cancelled"]
    assert services.models.loaded()[0].model.busy == 0

    async def stream_and_leave() -> None:
        arun = await services.generation.start(ask("a b c d e f"), CTX)
        await anext(arun.events)
        await arun.events.aclose()  # type: ignore[attr-defined]

    asyncio.run(stream_and_leave())
    assert [r.status for r in recorder.records] == ["cancelled", "cancelled"]
    assert services.models.loaded()[0].model.busy == 0


def test_errors_before_and_during_a_run(services: Services) -> None:
    recorder = Recorder()
    services.generation.observers.add(recorder)
    run = services.generation.generate(ask("fail after 1"), CTX)
    with pytest.raises(EngineError):
        list(run.events)
    recorder.refuse = True
    with pytest.raises(RateLimited):
        services.generation.generate(ask("hi"), CTX)
    assert [r.status for r in recorder.records] == ["error", "refused"]


def test_sampling_defaults_merge_once(services: Services) -> None:
    request = ask("hi", temperature=0.5, top_p=None)
    services.generation.apply_defaults(services.store.get(MODEL), request)
    assert request.sampling.temperature == 0.5 and request.sampling.top_k == 7
    assert request.sampling.top_p == 0.95  # not set anywhere: the built-in default
    events = list(services.generation.generate(ask("x"), CTX).events)
    assert isinstance(events[-1], Done)
