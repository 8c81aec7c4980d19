"""Text to index terms for the lexical leg: CJK character bigrams and lightly stemmed words.

FTS5's own tokenizers split on whitespace and punctuation, which leaves a whole Chinese sentence as
one token; so text is segmented here and FTS5 (unicode61) only splits the result on spaces.
Bigrams need no dictionary, cover new words (names, equipment models) and are what strong Chinese
BM25 baselines use. Changing anything here changes the index: bump SEGMENTER_VERSION, and
knowledge bases rebuild their lexical index on next open.
"""

from __future__ import annotations

import logging
import re

SEGMENTER_VERSION = "bigram-1"

# Question words: a question has them, the passage that answers it does not, so they would only
# lower lexical relevance. Bigrams containing these characters, and these words, are dropped
# from queries (documents keep them).
_QUESTION_CHARS = set("哪谁吗呢啥")
_QUESTION_BIGRAMS = {"什么", "多少", "怎么", "怎样", "如何", "为什", "为何", "是否", "几个", "几种", "几年",
                     "需要", "应该", "应当", "可以", "能否", "怎么办", "为什么"}
_QUESTION_WORDS = {"what", "which", "who", "whom", "whose", "how", "when", "where", "why", "do", "doe",
                   "did", "is", "are", "was", "were", "the", "a", "an", "of", "to", "in", "on", "for",
                   "and", "or", "i", "you", "it", "can", "should", "must", "be", "there", "this", "that",
                   "often", "much", "many", "long", "need"}

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_RUN = re.compile(rf"(?P<cjk>[{_CJK}]+)|(?P<word>[^\W_{_CJK}]+)")
_WORD = re.compile(rf"[^\W_{_CJK}]+")
_CJK_RUN = re.compile(rf"[{_CJK}]+")


def stem(word: str) -> str:
    """A light English stemmer (plural, -ing, -ed): enough for 'wearing'/'wear', 'pumps'/'pump'."""
    w = word
    if len(w) <= 3 or not w.isascii() or not w.isalpha():
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith("sses"):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    else:
        for suffix in ("ing", "ed"):
            if w.endswith(suffix) and len(w) - len(suffix) >= 3:
                w = w[: -len(suffix)]
                # stopped -> stopp -> stop
                if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "lsz":
                    w = w[:-1]
                return w
    # lubricate / lubricated -> lubricat
    return w[:-1] if len(w) > 4 and w.endswith("e") else w


def terms(text: str) -> list[str]:
    """Index terms in order: bigrams for CJK runs (a lone character stays a unigram), stemmed words."""
    out: list[str] = []
    for m in _RUN.finditer(text.lower()):
        run = m.group("cjk")
        if run is not None:
            if len(run) == 1:
                out.append(run)
            else:
                out.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            out.append(stem(m.group("word")))
    return out


def segment(text: str) -> str:
    """Terms joined by spaces: what goes into the FTS5 table."""
    return " ".join(terms(text))


def query_terms(text: str) -> list[str]:
    """Distinct terms of a query in first-seen order, question words left out (unless nothing else)."""
    found = list(dict.fromkeys(terms(text)))
    kept = [t for t in found if not _is_question_term(t)]
    return kept or found


def query_words(text: str) -> list[str]:
    """The query's words: jieba for Chinese (so no bigram straddles two words), stemmed English.

    Words, not bigrams, are what lexical relevance counts: a bigram made of the end of one word
    and the start of the next ("业需" in 作业需要) appears in no document and would count as a
    missing term.
    """
    import jieba

    jieba.setLogLevel(logging.WARNING)
    words: list[str] = []
    for piece in jieba.lcut(text.lower()):
        for m in _RUN.finditer(piece):
            run = m.group("cjk")
            word = run if run is not None else stem(m.group("word"))
            if _is_question_term(word) or (run is not None and any(ch in _QUESTION_CHARS for ch in run)):
                continue
            if run is not None and len(run) == 1:
                continue  # 的, 是, 由: function characters, and every passage has them
            words.append(word)
    kept = list(dict.fromkeys(words))
    return kept or query_terms(text)


def word_terms(word: str) -> list[str]:
    """The index terms (bigrams) a query word is made of."""
    return terms(word)


def _is_question_term(term: str) -> bool:
    if term.isascii():
        return term in _QUESTION_WORDS
    return term in _QUESTION_BIGRAMS or any(ch in _QUESTION_CHARS for ch in term)


def cjk_ratio(text: str) -> float:
    """Share of letters that are CJK (used to describe documents and queries)."""
    cjk = sum(len(m) for m in _CJK_RUN.findall(text))
    words = sum(len(m) for m in _WORD.findall(text))
    return cjk / (cjk + words) if cjk + words else 0.0


class TermMatcher:
    """Which query terms a passage contains, without segmenting the whole passage."""

    def __init__(self, text: str) -> None:
        self.lower = text.lower()
        self._words: set[str] | None = None

    def has(self, term: str) -> bool:
        if _CJK_RUN.fullmatch(term):
            # A bigram is in the passage's terms exactly when it is a substring of it.
            return term in self.lower
        if self._words is None:
            self._words = {stem(w) for w in _WORD.findall(self.lower)}
        return term in self._words
