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


# -- answers users can check --------------------------------------------------------------------

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*\s*%?")
_ANSWER_SENTENCE = re.compile(r"[^。！？!?\n]+(?:[。！？!?]+|\n|$)")
_CITED = re.compile(r"\[(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\]")
_QUOTE_SPLIT = re.compile(r"[^。！？；!?;\n]+[。！？；!?;]?")
#: share of an answer's key words its cited sources must contain
MIN_SUPPORT = 0.5


def _grams(text: str) -> set[str]:
    from bendi.kb.segment import terms

    return set(terms(text))


def quote(hit: Hit, claim: str) -> str:
    """The sentence of the source that shares most words (bigrams) with `claim`."""
    want = _grams(claim)
    best, best_score = "", -1.0
    for m in _QUOTE_SPLIT.finditer(hit.text):
        sentence = m.group(0).strip()
        if not sentence:
            continue
        have = _grams(sentence)
        score = len(want & have) / (len(have) ** 0.5 or 1.0)
        if score > best_score:
            best, best_score = sentence, score
    return best


def key_facts(answer: str, question: str) -> list[str]:
    """What an answer asserts beyond the question: its numbers and its content words."""
    from bendi.kb.segment import query_words

    plain = _CITED.sub(" ", answer)
    asked = question.lower()
    facts = [n.strip() for n in _NUMBER.findall(plain) if n.strip() not in asked]
    facts += [w for w in query_words(plain) if len(w) >= 2 and w not in asked and not w.isdigit()]
    return list(dict.fromkeys(facts))


def check_answer(answer: str, question: str, sources: list[Hit]) -> dict[str, Any]:
    """Citations a user can check, and whether the cited sources hold the answer's key facts.

    Each citation: the source number, document, page (PDF) or sheet and rows (spreadsheets),
    section, and the quoted sentence that supports the sentence citing it. `grounded` is False when
    the answer cites nothing, or its cited sources lack a number it states or most of its key
    words; `unsupported` lists the facts not found (a simple overlap check, not entailment).
    """
    numbers = citations(answer, len(sources))
    claims: dict[int, list[str]] = {}
    for m in _ANSWER_SENTENCE.finditer(answer):
        sentence = m.group(0)
        for n in citations(sentence, len(sources)):
            claims.setdefault(n, []).append(_CITED.sub("", sentence))
    out = []
    for n in numbers:
        hit = sources[n - 1]
        sheet = hit.section.split(" > ")[0] if hit.row_start is not None and hit.section else None
        out.append({"number": n, "document": hit.document, "page": hit.page, "sheet": sheet,
                    "rows": None if hit.row_start is None else [hit.row_start, hit.row_end or hit.row_start],
                    "section": hit.section, "location": hit.location(),
                    "quote": quote(hit, " ".join(claims.get(n, [])) or question)})
    facts = key_facts(answer, question)
    cited_text = " ".join(sources[n - 1].title + " " + sources[n - 1].section + " " + sources[n - 1].text
                          for n in numbers).lower()
    missing = [f for f in facts if f.lower() not in cited_text]
    missing_numbers = [f for f in missing if _NUMBER.fullmatch(f)]
    words = [f for f in facts if not _NUMBER.fullmatch(f)]
    word_support = 1.0 - sum(1 for f in missing if f in words) / len(words) if words else 1.0
    grounded = bool(numbers) and not missing_numbers and word_support >= MIN_SUPPORT
    return {"citations": out, "grounded": grounded, "unsupported": missing if numbers else facts}
