"""Answering from a knowledge base, the parts that need no model: retrieve the sources for a
question (or a chat's last user turn), then, given the answering model's context and tokenizer,
fit the sources and build the chat request that asks for an answer citing them as [n].

The generation service (bendi.core) loads the model, runs the request and observes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bendi.errors import InvalidRequest
from bendi.kb.answer import build_messages, citations, fit_sources, last_user_text
from bendi.kb.retrieval import Hit, SearchResult
from bendi.runtime.types import ChatRequest

#: tokens kept free for the answer when the request sets no max_tokens
DEFAULT_ANSWER_TOKENS = 512
#: sampling for answers unless the caller sets it: low temperature keeps to the sources
ANSWER_OPTIONS: dict[str, Any] = {"temperature": 0.2}

#: (knowledge base, query, top_k=...) -> ranked hits above the threshold
Searcher = Callable[..., SearchResult]


@dataclass
class Retrieved:
    """The question, the earlier turns of the chat, and the sources found for it."""

    question: str
    history: list[dict[str, Any]]
    sources: list[Hit]

    def cited_documents(self, text: str) -> list[str]:
        """The documents an answer cites, in first-cited order, each once."""
        names = [self.sources[n - 1].document for n in citations(text, len(self.sources))]
        return list(dict.fromkeys(names))


def retrieve(search: Searcher, name: str, question: str | None, messages: list[dict[str, Any]] | None,
             top_k: int | None) -> Retrieved:
    """Sources for `question`, or for the last user turn of `messages` (which it then replaces)."""
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
    result = search(name, question, top_k=top_k)
    return Retrieved(question, history, result.hits)


def answer_request(retrieved: Retrieved, *, model: str, ctx: int, tokenize: Callable[[str], list[int]],
                   options: dict[str, Any], max_tokens: int | None, think: bool | None) -> ChatRequest:
    """The chat request for an answer by `model` (context `ctx` tokens): as many sources as fit
    beside the instructions, the earlier turns and room for the answer. Keeps the sources that
    fit in `retrieved.sources`, so their numbers match the prompt's."""
    answer_tokens = max_tokens or DEFAULT_ANSWER_TOKENS
    frame = build_messages(retrieved.question, [], retrieved.history)
    frame_tokens = sum(len(tokenize(str(m.get("content", "")))) for m in frame)
    budget = max(64, int(ctx) - answer_tokens - frame_tokens - 64)
    retrieved.sources = fit_sources(retrieved.sources, budget, lambda text: len(tokenize(text)))
    return ChatRequest(model=model, messages=build_messages(retrieved.question, retrieved.sources, retrieved.history),
                       options={**ANSWER_OPTIONS, **{k: v for k, v in options.items() if v is not None}},
                       max_tokens=answer_tokens, think=think)
