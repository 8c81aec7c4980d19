"""GenerationService: resolve, apply defaults, acquire, generate, observe, release."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bendi.core.context import RequestContext
from bendi.core.embeddings import Embedded, EmbeddingService
from bendi.core.observe import Kind, Observers, Tracker
from bendi.errors import EngineError, InvalidRequest, ModelNotFound
from bendi.kb.answering import Retrieved, answer_request
from bendi.kb.retrieval import Hit
from bendi.kb.service import KnowledgeBaseService
from bendi.runtime.manager import Loaded, ModelManager
from bendi.runtime.types import ChatRequest, Done, Event, SamplingParams, TextDelta, Usage
from bendi.store import ModelRecord, ModelStore
from bendi.store.bundled import BUNDLED_NAME

#: the model that answers from a knowledge base when none is named (a "kb:<name>" chat, `kb ask`)
DEFAULT_ANSWER_MODEL = BUNDLED_NAME
KB_PREFIX = "kb:"

#: builds the engine request once the model is loaded (knowledge-base answers fit their sources
#: to the model's context)
RequestBuilder = Callable[[Loaded], ChatRequest]


@dataclass(kw_only=True)
class RunInfo:
    """What the dialects need besides the events to answer."""

    #: the model that answers (its full name)
    model: str
    #: identifies the model file (system_fingerprint); None when no model ran
    fingerprint: str | None
    load_seconds: float
    #: the context length the model is loaded with
    ctx: int = 0
    #: knowledge-base answers: the question and the sources its [n] citations number
    knowledge_base: str | None = None
    question: str | None = None
    sources: list[Hit] = field(default_factory=list)


@dataclass(kw_only=True)
class Run(RunInfo):
    """A started generation, streamed asynchronously (the server)."""

    events: AsyncIterator[Event]


@dataclass(kw_only=True)
class BlockingRun(RunInfo):
    """A started generation, streamed by a blocking iterator (the CLI); closing it cancels."""

    events: Iterator[Event]


def _default_limit(parameters: dict[str, Any], fallback: int) -> int:
    for key in ("max_tokens", "num_predict"):
        value = parameters.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return fallback


def knowledge_base_of(model: str) -> str | None:
    """`docs` for the model name `kb:docs`, else None."""
    return model[len(KB_PREFIX):] if model.startswith(KB_PREFIX) else None


@dataclass
class _Answer:
    """A knowledge-base answer after retrieval: admitted, with its sources (or its not-found text)."""

    knowledge_base: str
    model: str
    tracker: Tracker
    retrieved: Retrieved
    not_found: list[Event] | None = None

    def info(self) -> dict[str, Any]:
        if self.not_found is not None:
            return {"model": self.model, "fingerprint": None, "load_seconds": 0.0,
                    "knowledge_base": self.knowledge_base, "question": self.retrieved.question}
        return {"knowledge_base": self.knowledge_base, "question": self.retrieved.question}


class _Held:
    """The loaded model of a run, once the run's generator has acquired it."""

    loaded: Loaded | None = None


class GenerationService:
    """The one path from an entry point to an engine and back."""

    def __init__(self, store: ModelStore, models: ModelManager, kb: KnowledgeBaseService,
                 embeddings: EmbeddingService, observers: Observers, *, default_model: str | None = None,
                 max_tokens: int = 2048) -> None:
        self.store = store
        #: the model for requests that name none (bendi serve --model)
        self.default_model = default_model
        #: the generation limit when neither the request nor the model's parameters set one
        self.max_tokens = max_tokens
        self.models = models
        self.kb = kb
        self.embeddings = embeddings
        self.observers = observers

    # -- names and defaults --------------------------------------------------------------------

    def model_or_default(self, model: str | None) -> str:
        """The model a request names, or the default (bendi serve --model) when it names none."""
        if model:
            return model
        if self.default_model:
            return self.default_model
        raise InvalidRequest("model: Field required (or start the server with --model NAME to serve "
                             "requests that name none)", param="model")

    def apply_defaults(self, record: ModelRecord, request: ChatRequest) -> None:
        """The model's defaults under what the request set: sampling parameters, the default
        system prompt (when the messages bring none) and the generation limit (a request without
        one gets the model's `max_tokens` parameter, else the server's). The one place they are
        merged."""
        request.model = str(record.name)
        if request.max_tokens is None:
            request.max_tokens = _default_limit(record.parameters, self.max_tokens)
        values = dict(record.parameters)
        values.update({k: v for k, v in request.options.items() if v is not None})
        request.sampling = SamplingParams.from_mapping(values)
        system = record.manifest.get("system")
        if (system and request.use_default_system and request.messages is not None
                and not any(m.get("role") == "system" for m in request.messages)):
            request.messages = [{"role": "system", "content": system}, *request.messages]

    def _full_name(self, model: str) -> str:
        try:
            return str(self.store.get(model).name)
        except ModelNotFound:
            return model  # it fails when it is needed, with the store's message

    # -- generation ----------------------------------------------------------------------------

    async def start(self, request: ChatRequest, context: RequestContext, *,
                    keep_alive: float | None = None) -> Run:
        """Admit, load the model, and start generating. Errors before the first event (unknown
        model, refused, prompt too long, queue full) raise here, so the caller can still answer
        with a proper status code; later ones end the event stream."""
        record = await asyncio.to_thread(self.store.get, self.model_or_default(request.model))
        self.apply_defaults(record, request)
        tracker = Tracker(self.observers, context, _kind(request), request.model,
                          prompt=request.messages if request.prompt is None else request.prompt)
        return await self._arun(tracker, lambda loaded: request, request.model, request.num_ctx, keep_alive)

    def generate(self, request: ChatRequest, context: RequestContext, *,
                 keep_alive: float | None = None) -> BlockingRun:
        """`start` for blocking callers (the CLI)."""
        record = self.store.get(self.model_or_default(request.model))
        self.apply_defaults(record, request)
        tracker = Tracker(self.observers, context, _kind(request), request.model,
                          prompt=request.messages if request.prompt is None else request.prompt)
        return self._run(tracker, lambda loaded: request, request.model, request.num_ctx, keep_alive)

    async def _arun(self, tracker: Tracker, build: RequestBuilder, model: str, ctx: int | None,
                    keep_alive: float | None, **info: Any) -> Run:
        held = _Held()
        events = self._aevents(tracker, build, model, ctx, keep_alive, held)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            raise EngineError("the engine ended the request without a result") from None
        return Run(events=_aprepend(first, events), **self._info(held, tracker), **info)

    def _run(self, tracker: Tracker, build: RequestBuilder, model: str, ctx: int | None,
             keep_alive: float | None, **info: Any) -> BlockingRun:
        held = _Held()
        events = self._events(tracker, build, model, ctx, keep_alive, held)
        try:
            first = next(events)
        except StopIteration:
            raise EngineError("the engine ended the request without a result") from None
        return BlockingRun(events=_prepend(first, events), **self._info(held, tracker), **info)

    @staticmethod
    def _info(held: _Held, tracker: Tracker) -> dict[str, Any]:
        loaded = held.loaded
        assert loaded is not None
        return {"model": loaded.name, "fingerprint": loaded.record.digest, "ctx": loaded.ctx,
                "load_seconds": tracker.load_seconds}

    async def _aevents(self, tracker: Tracker, build: RequestBuilder, model: str, ctx: int | None,
                       keep_alive: float | None, held: _Held) -> AsyncIterator[Event]:
        with tracker.observing():
            started = time.perf_counter()
            loaded = await asyncio.to_thread(self.models.acquire, model, ctx=ctx, keep_alive=keep_alive)
            tracker.load_seconds = time.perf_counter() - started
            held.loaded = loaded
            try:
                # closing the engine's generator cancels the request there if it is still running
                async with contextlib.aclosing(loaded.model.agenerate(build(loaded))) as events:
                    async for event in events:
                        tracker.event(event)
                        yield event
            finally:
                self.models.release(loaded, keep_alive)

    def _events(self, tracker: Tracker, build: RequestBuilder, model: str, ctx: int | None,
                keep_alive: float | None, held: _Held) -> Iterator[Event]:
        with tracker.observing():
            started = time.perf_counter()
            loaded = self.models.acquire(model, ctx=ctx, keep_alive=keep_alive)
            tracker.load_seconds = time.perf_counter() - started
            held.loaded = loaded
            try:
                with contextlib.closing(loaded.model.generate(build(loaded))) as events:
                    for event in events:
                        tracker.event(event)
                        yield event
            finally:
                self.models.release(loaded, keep_alive)

    # -- loading without generating -------------------------------------------------------------

    def load(self, model: str, *, ctx: int | None = None, keep_alive: float | None = None) -> Loaded:
        """Load `model` (if it is not) and restart its keep-alive clock."""
        loaded = self.models.acquire(model, ctx=ctx, keep_alive=keep_alive)
        self.models.release(loaded, keep_alive)
        return loaded

    async def aload(self, model: str, *, ctx: int | None = None, keep_alive: float | None = None) -> Loaded:
        return await asyncio.to_thread(self.load, model, ctx=ctx, keep_alive=keep_alive)

    async def aunload(self, model: str) -> str:
        """Unload `model` now; its full name."""
        name = str((await asyncio.to_thread(self.store.get, model)).name)
        await asyncio.to_thread(self.models.unload, name)
        return name

    # -- knowledge-base answers ----------------------------------------------------------------

    async def ask(self, knowledge_base: str, context: RequestContext, *, question: str | None = None,
                  messages: list[dict[str, Any]] | None = None, model: str | None = None,
                  options: dict[str, Any] | None = None, max_tokens: int | None = None,
                  top_k: int | None = None, think: bool | None = None, not_found: str | None = None) -> Run:
        """An answer from `knowledge_base` citing its sources as [n]; nothing relevant: the
        explicit not-found answer, and no model is loaded."""
        answer = await asyncio.to_thread(self._retrieve, knowledge_base, context, question, messages, model,
                                         top_k, not_found)
        info = answer.info()
        if answer.not_found is not None:
            return Run(events=_alist(answer.not_found), **info)
        build = self._answer_builder(answer.retrieved, options or {}, max_tokens, think)
        run = await self._arun(answer.tracker, build, answer.model, None, None, **info)
        run.sources = answer.retrieved.sources  # the ones that fit the model's context
        return run

    def ask_blocking(self, knowledge_base: str, context: RequestContext, *, question: str | None = None,
                     messages: list[dict[str, Any]] | None = None, model: str | None = None,
                     options: dict[str, Any] | None = None, max_tokens: int | None = None,
                     top_k: int | None = None, think: bool | None = None,
                     not_found: str | None = None) -> BlockingRun:
        """`ask` for blocking callers (the CLI)."""
        answer = self._retrieve(knowledge_base, context, question, messages, model, top_k, not_found)
        info = answer.info()
        if answer.not_found is not None:
            return BlockingRun(events=iter(answer.not_found), **info)
        build = self._answer_builder(answer.retrieved, options or {}, max_tokens, think)
        blocking = self._run(answer.tracker, build, answer.model, None, None, **info)
        blocking.sources = answer.retrieved.sources  # the ones that fit the model's context
        return blocking

    def _retrieve(self, knowledge_base: str, context: RequestContext, question: str | None,
                  messages: list[dict[str, Any]] | None, model: str | None, top_k: int | None,
                  not_found: str | None) -> _Answer:
        """Admit the answer, retrieve its sources, and when there are none, the not-found answer."""
        name = self._full_name(model or DEFAULT_ANSWER_MODEL)
        tracker = Tracker(self.observers, context, "chat", name, knowledge_base=knowledge_base,
                          prompt=messages if question is None else question)
        with tracker.failing():
            retrieved = self.kb.retrieve(knowledge_base, question, messages=messages, top_k=top_k)
            answer = _Answer(knowledge_base, name, tracker, retrieved)
            if not retrieved.sources:
                text = self.kb.not_found_text(knowledge_base, retrieved.question, not_found)
                answer.not_found = self._not_found(tracker, text)
        tracker.documents = retrieved.cited_documents
        return answer

    def _answer_builder(self, retrieved: Retrieved, options: dict[str, Any], max_tokens: int | None,
                        think: bool | None) -> RequestBuilder:
        def build(loaded: Loaded) -> ChatRequest:
            request = answer_request(retrieved, model=loaded.name, ctx=loaded.ctx,
                                     tokenize=loaded.model.tokenize, options=options,
                                     max_tokens=max_tokens, think=think)
            self.apply_defaults(loaded.record, request)
            return request

        return build

    @staticmethod
    def _not_found(tracker: Tracker, text: str) -> list[Event]:
        """The not-found answer's events, recorded as a request no model ran for."""
        events: list[Event] = [TextDelta(text), Done("stop", Usage())]
        tracker.model = None
        for event in events:
            tracker.event(event)
        tracker.finish("ok")
        return events

    # -- embeddings ----------------------------------------------------------------------------

    async def embed(self, model: str, texts: list[str], context: RequestContext, *,
                    keep_alive: float | None = None) -> Embedded:
        return await self.embeddings.aembed(model, texts, context, keep_alive=keep_alive)


def _kind(request: ChatRequest) -> Kind:
    return "completion" if request.prompt is not None else "chat"


async def _aprepend(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


def _prepend(first: Event, rest: Iterator[Event]) -> Iterator[Event]:
    try:
        yield first
        yield from rest
    finally:
        rest.close()  # type: ignore[attr-defined]


async def _alist(events: list[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event
