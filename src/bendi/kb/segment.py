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
from dataclasses import dataclass
from typing import Any

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
_ALNUM = re.compile(r"[a-z0-9]+")


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


#: part-of-speech tags (jieba's, ICTCLAS style) of characters that carry no subject when they stand
#: alone in a question: verbs, adverbs, prepositions, particles, pronouns, numerals, measure
#: words, directions, conjunctions, interjections, onomatopoeia, time words, modal particles
_FUNCTION_TAGS = {"v", "vg", "vd", "vi", "vq", "d", "dg", "p", "u", "uj", "ul", "uz", "ug", "uv", "ud", "r", "rg",
                  "rr", "rz", "m", "mq", "mg", "q", "f", "c", "e", "o", "t", "tg", "y"}

#: jieba's tags of nouns (n, nr, ns, nt, nz, ng...), abbreviations and unknown words
_NOUN_TAGS = {"n", "j", "x"}


def query_words(text: str) -> list[str]:
    """The query's words: jieba for Chinese (so no bigram straddles two words), stemmed English.

    Words, not bigrams, are what lexical relevance counts: a bigram made of the end of one word
    and the start of the next ("业需" in 作业需要) appears in no document and would count as a
    missing term.

    jieba cuts a name it does not know into single characters (雫石车站 -> 雫/石/车站, 灰凤冠雉 ->
    灰/凤冠/雉). Dropping single characters as function words would drop the name, the one word
    that tells a question about 雫石 from one about the station next to it. So a single character
    is dropped only when its part of speech is a function word's (拜 in 刘德一拜了谁, 年 in 前37年);
    the others are joined to their neighbours: a run of them becomes one word (雫石), and a lone
    one goes to the noun before it (凤冠 + 雉: a Chinese compound ends in its head) or else to the
    noun after it (灰 + 凤冠), never to a verb (时 + 必须).
    """
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    tokens: list[_Token] = []
    for piece, flag in _rejoin_alnum(jieba.posseg.lcut(text.lower())):
        for m in _RUN.finditer(piece):
            run = m.group("cjk")
            if run is None:
                word = stem(m.group("word"))
                tokens.append(_Token("", "stop") if _is_question_term(word) else _Token(word, "other"))
            elif _is_question_term(run) or any(ch in _QUESTION_CHARS for ch in run):
                tokens.append(_Token("", "stop"))
            elif len(run) == 1:
                tokens.append(_Token("", "stop") if flag in _FUNCTION_TAGS else _Token(run, "char", noun=True))
            else:
                tokens.append(_Token(run, "word", noun=flag[:1] in _NOUN_TAGS))
    # a run of lone characters is a name jieba did not know (雫 + 石)
    joined: list[_Token] = []
    for token in tokens:
        if token.kind == "char" and joined and joined[-1].kind in ("char", "name"):
            joined[-1] = _Token(joined[-1].text + token.text, "name", noun=True)
        else:
            joined.append(token)
    # a lone character goes with the noun before it (凤冠 + 雉: a compound ends in its head), or
    # else with the noun after it (灰 + 凤冠); otherwise it is a word of its own (䲟)
    words: list[str] = []
    for i, token in enumerate(joined):
        if token.kind == "char":
            before = joined[i - 1] if i else None
            after = joined[i + 1] if i + 1 < len(joined) else None
            if before is not None and before.takes_character() and words and words[-1] == before.text:
                before.text = words[-1] = before.text + token.text
            elif after is not None and after.takes_character():
                after.text = token.text + after.text
            else:
                words.append(token.text)
        elif token.kind != "stop":
            words.append(token.text)
    kept = list(dict.fromkeys(words))
    return kept or query_terms(text)


@dataclass
class _Token:
    """A piece of a question for query_words."""

    text: str
    #: "word" (Chinese), "name" (lone characters joined), "char" (a lone content character),
    #: "other" (an English word or a number) or "stop" (a question or function word)
    kind: str
    noun: bool = False

    def takes_character(self) -> bool:
        return self.kind in ("word", "name") and self.noun


def _rejoin_alnum(pairs: list[Any]) -> list[tuple[str, str]]:
    """(piece, part of speech) with letters and digits that jieba's tagger cut apart joined again
    (84/M -> 84m: the tagger splits a number from its letters, plain jieba does not)."""
    out: list[tuple[str, str]] = []
    for pair in pairs:
        if out and _ALNUM.fullmatch(pair.word) and _ALNUM.fullmatch(out[-1][0]):
            out[-1] = (out[-1][0] + pair.word, "eng")
        else:
            out.append((pair.word, pair.flag))
    return out


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

    def has_word(self, word: str) -> bool:
        """Whether a query word (query_words) is in the passage: a Chinese word as written, an English
        word or a number as a whole word (7 is not in 1987, 84m not in 84)."""
        if _CJK_RUN.fullmatch(word):
            return word in self.lower
        return all(self.has(t) for t in terms(word)) if word else False

    def has(self, term: str) -> bool:
        if _CJK_RUN.fullmatch(term):
            # A bigram is in the passage's terms exactly when it is a substring of it.
            return term in self.lower
        if self._words is None:
            self._words = {stem(w) for w in _WORD.findall(self.lower)}
        return term in self._words
