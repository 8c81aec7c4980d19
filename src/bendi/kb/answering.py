"""Answering from a knowledge base: retrieve, fit the sources into the model's context, then
stream an answer that cites them as [n]; nothing relevant -> the explicit not-found answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bendi.errors import InvalidRequest
from bendi.kb.answer import build_messages, fit_sources, last_user_text, not_found_text
from bendi.kb.registry import KnowledgeBaseRegistry
from bendi.kb.retrieval import Hit, SearchResult
from bendi.runtime.manager import ModelManager
from bendi.runtime.types import ChatRequest, Done, Event, SamplingParams, TextDelta, Usage

#: tokens kept free for the answer when the request sets no max_tokens
DEFAULT_ANSWER_TOKENS = 512

#: (knowledge base, query, top_k) -> ranked hits above the threshold
Searcher = Callable[..., SearchResult]


@dataclass
class Answer:
    """Sources first (for citations), then the model's events; `model` is None when nothing was found."""

    question: str
    sources: list[Hit]
    events: Iterator[Event]
    model: str | None


@dataclass
class AsyncAnswer:
    question: str
    sources: list[Hit]
    events: AsyncIterator[Event]
    model: str | None
    #: the runtime's Loaded record of the answering model (None when nothing was found)
    loaded: Any = None


class Answerer:
    """Retrieval plus generation with the model manager's loaded models."""

    def __init__(self, registry: KnowledgeBaseRegistry, models: ModelManager, search: Searcher) -> None:
        self.registry = registry
        self.models = models
        self.search = search

    def _prepare(self, name: str, question: str | None, messages: list[dict[str, Any]] | None,
                 top_k: int | None) -> tuple[str, list[dict[str, Any]], list[Hit]]:
        history = [dict(m) for m in messages or []]
        if question is None:
            question = last_user_text(history)
            # the last user turn is replaced by the sources-and-question turn
            for i in range(len(history) - 1, -1, -1):
                if history[i].get("role") == "user":
                    del history[i]
                    break
        if not question or not question.strip():
            raise InvalidRequest("the question is empty", param="messages" if messages else "question")
        result = self.search(name, question, top_k=top_k)
        return question, history, result.hits

    def answer(self, name: str, question: str | None = None, *, messages: list[dict[str, Any]] | None = None,
               model: str, sampling: SamplingParams | None = None, max_tokens: int | None = None,
               top_k: int | None = None, not_found: str | None = None, think: bool | None = None) -> Answer:
        """Retrieve, then stream an answer that cites the sources as [n]; nothing relevant -> not found."""
        asked, history, hits = self._prepare(name, question, messages, top_k)
        if not hits:
            return Answer(asked, [], iter(self._not_found_events(name, asked, not_found)), None)
        loaded = self.models.acquire(model)
        try:
            hits, request = self._request(loaded, asked, history, hits, sampling, max_tokens, think)
            events = loaded.model.generate(request)
        except BaseException:
            self.models.release(loaded)
            raise

        def stream() -> Iterator[Event]:
            try:
                yield from events
            finally:
                self.models.release(loaded)

        return Answer(asked, hits, stream(), loaded.name)

    async def aanswer(self, name: str, question: str | None = None, *, messages: list[dict[str, Any]] | None = None,
                      model: str, sampling: SamplingParams | None = None, max_tokens: int | None = None,
                      top_k: int | None = None, not_found: str | None = None,
                      think: bool | None = None) -> AsyncAnswer:
        """`answer` for the server: retrieval and loading run in threads, events come async."""
        import asyncio

        asked, history, hits = await asyncio.to_thread(self._prepare, name, question, messages, top_k)
        if not hits:
            not_found_events = self._not_found_events(name, asked, not_found)

            async def nothing() -> AsyncIterator[Event]:
                for event in not_found_events:
                    yield event
            return AsyncAnswer(asked, [], nothing(), None)
        loaded = await asyncio.to_thread(self.models.acquire, model)
        try:
            hits, request = self._request(loaded, asked, history, hits, sampling, max_tokens, think)
        except BaseException:
            self.models.release(loaded)
            raise

        async def stream() -> AsyncIterator[Event]:
            try:
                async for event in loaded.model.agenerate(request):
                    yield event
            finally:
                self.models.release(loaded)

        return AsyncAnswer(asked, hits, stream(), loaded.name, loaded)

    def _request(self, loaded: Any, question: str, history: list[dict[str, Any]], hits: list[Hit],
                 sampling: SamplingParams | None, max_tokens: int | None,
                 think: bool | None) -> tuple[list[Hit], ChatRequest]:
        answer_tokens = max_tokens or DEFAULT_ANSWER_TOKENS
        frame = build_messages(question, [], history)
        frame_tokens = sum(len(loaded.model.tokenize(str(m.get("content", "")))) for m in frame)
        budget = max(64, int(loaded.ctx) - answer_tokens - frame_tokens - 64)
        hits = fit_sources(hits, budget, lambda text: len(loaded.model.tokenize(text)))
        if sampling is None:
            sampling = SamplingParams.from_mapping({**loaded.record.parameters, "temperature": 0.2})
        request = ChatRequest(model=loaded.name, messages=build_messages(question, hits, history),
                              sampling=sampling, max_tokens=answer_tokens, think=think)
        return hits, request

    def _not_found_events(self, name: str, question: str, configured: str | None) -> list[Event]:
        configured = configured or self.registry.stored_settings(name).get("not_found_text")
        return [TextDelta(not_found_text(question, configured)), Done("stop", Usage())]
