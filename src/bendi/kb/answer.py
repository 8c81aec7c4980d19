"""Answering from retrieved chunks: the prompt with numbered sources, and [n] citations back."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bendi.kb.retrieval import Hit
from bendi.kb.segment import cjk_ratio

NOT_FOUND_EN = "Not found in the knowledge base."
NOT_FOUND_ZH = "知识库中没有找到相关内容。"

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources provided. After each statement, cite the "
    "sources it comes from as [1], [2]. If the sources do not contain the answer, say that the "
    "knowledge base does not contain it; do not use outside knowledge. Answer in the language of "
    "the question.\n"
    "你只能根据所给的编号资料回答问题，并在每句话后用[1]、[2]标注出处；资料中没有答案时，请说明知识库中没有相关内容。"
)

_CITATION = re.compile(r"\[(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\]")


def not_found_text(question: str, configured: str | None = None) -> str:
    """The explicit not-found answer, in the question's language unless configured."""
    if configured:
        return configured
    return NOT_FOUND_ZH if cjk_ratio(question) >= 0.3 else NOT_FOUND_EN


def format_sources(hits: list[Hit]) -> str:
    return "\n\n".join(f"[{i}] ({h.location()})\n{h.text}" for i, h in enumerate(hits, 1))


def fit_sources(hits: list[Hit], budget_tokens: int, count: Callable[[str], int]) -> list[Hit]:
    """The leading hits whose formatted text fits in `budget_tokens` (at least one, cut short)."""
    kept: list[Hit] = []
    for hit in hits:
        if count(format_sources(kept + [hit])) > budget_tokens:
            break
        kept.append(hit)
    if not kept and hits:
        first = hits[0]
        text = first.text
        while text and count(format_sources([_with_text(first, text)])) > budget_tokens:
            text = text[: int(len(text) * 0.8)]
        kept = [_with_text(first, text)]
    return kept


def _with_text(hit: Hit, text: str) -> Hit:
    from dataclasses import replace

    return replace(hit, text=text)


def build_messages(question: str, hits: list[Hit], history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Chat messages: system instructions, earlier turns, then the sources and the question."""
    system = SYSTEM_PROMPT
    earlier = [dict(m) for m in (history or [])]
    if earlier and earlier[0].get("role") == "system":
        system = f"{earlier.pop(0).get('content', '')}\n\n{SYSTEM_PROMPT}"
    user = f"Sources:\n\n{format_sources(hits)}\n\nQuestion: {question}\nAnswer with citations:"
    return [{"role": "system", "content": system}, *earlier, {"role": "user", "content": user}]


def citations(text: str, n_sources: int) -> list[int]:
    """Source numbers cited in `text` as [n] or [1, 2], in first-cited order; out-of-range ones dropped."""
    seen: list[int] = []
    for m in _CITATION.finditer(text):
        for part in re.split(r"\s*[,，、]\s*", m.group(1)):
            n = int(part)
            if 1 <= n <= n_sources and n not in seen:
                seen.append(n)
    return seen


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The question in a chat: the text of the last user message."""
    for m in reversed(messages):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""
