"""What both dialects share: load the model, run a request, account for it, release the model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bendi.errors import EngineError
from bendi.runtime.manager import Loaded
from bendi.runtime.types import ChatRequest, Done, Event, ReasoningDelta, SamplingParams, TextDelta
from bendi.server.metrics import Metrics
from bendi.services import Services


@dataclass
class Run:
    """A started generation: its model, the time spent loading, and its events."""

    loaded: Loaded
    load_seconds: float
    events: AsyncIterator[Event]


def sampling_for(loaded_params: dict[str, Any], overrides: dict[str, Any]) -> SamplingParams:
    """Model defaults (from its manifest) overlaid with what the request set."""
    values = dict(loaded_params)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SamplingParams.from_mapping(values)


async def acquire(services: Services, model: str, *, ctx: int | None = None,
                  keep_alive: float | None = None) -> tuple[Loaded, float]:
    started = time.perf_counter()
    loaded = await asyncio.to_thread(services.models.acquire, model, ctx=ctx, keep_alive=keep_alive)
    return loaded, time.perf_counter() - started


async def start(services: Services, metrics: Metrics, request: ChatRequest, *,
                ctx: int | None = None, keep_alive: float | None = None) -> Run:
    """Load the model and start generating. Errors before the first event (unknown model, prompt
    too long, queue full) raise here, so the caller can still answer with a proper status code."""
    loaded, load_seconds = await acquire(services, request.model, ctx=ctx, keep_alive=keep_alive)
    request.model = loaded.name
    events = _accounted(services, metrics, loaded, request, keep_alive)
    try:
        first = await anext(events)
    except StopAsyncIteration:
        raise EngineError("the engine ended the request without a result") from None
    return Run(loaded, load_seconds, _prepend(first, events))


async def _accounted(services: Services, metrics: Metrics, loaded: Loaded, request: ChatRequest,
                     keep_alive: float | None) -> AsyncIterator[Event]:
    try:
        async for event in loaded.model.agenerate(request):
            if isinstance(event, Done):
                metrics.observe(loaded.name, event)
            yield event
    finally:
        services.models.release(loaded, keep_alive)


async def _prepend(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


@dataclass
class Collected:
    """A whole non-streamed answer."""

    text: str
    reasoning: str
    done: Done
    logprobs: list[Any]


async def collect(events: AsyncIterator[Event]) -> Collected:
    text: list[str] = []
    reasoning: list[str] = []
    logprobs: list[Any] = []
    done: Done | None = None
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
            if event.logprobs:
                logprobs.extend(event.logprobs)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, Done):
            done = event
    if done is None:
        raise EngineError("the engine ended the request without a result")
    return Collected("".join(text), "".join(reasoning), done, logprobs)
