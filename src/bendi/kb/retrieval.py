"""Hybrid retrieval: lexical (FTS5 BM25 over character bigrams) and vector (multilingual-e5)
candidates, fused by their scores, then the answerability gate (gate.py) decides between "here are
the sources" and "not found".

Lexical leg. The question's character bigrams (question words such as 什么/哪/多少 left out) are
matched with BM25 against the chunks and their headings (title and section weigh twice).
Bigrams, not dictionary words: a bigram matches inside unknown names and across a word
boundary that a segmenter would split differently in the question and in the document (on CMRC
2018, bigram queries found the answer in the top 5 for 0.994 of the questions, jieba-word
queries for 0.985).

Vector leg. The question is embedded as a query and its nearest chunk vectors are found (exactly,
or with the approximate index on large knowledge bases, see ann.py). Chunks found only by the
lexical leg get their exact cosine too, so every candidate has both scores.

Fusion. Per question, BM25 is divided by the best BM25 among the candidates and the cosine is
rescaled between the lowest and highest candidate cosine; fused = lexical_weight * bm25' +
vector_weight * cosine'. Score fusion keeps how far ahead the best chunk is, which rank fusion
(RRF, still available as fusion="rrf") throws away.

Each hit carries `lexical`: the share of the question's words (IDF²-weighted, rarest bigram of
each word) found in the chunk or its headings, and `vector`: the cosine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from bendi.errors import InvalidRequest
from bendi.kb.chunking import split_sentences
from bendi.kb.embed import Embedder
from bendi.kb.gate import Gate, load_gate
from bendi.kb.index import KnowledgeBaseIndex, idf
from bendi.kb.segment import TermMatcher, query_terms, query_words, word_terms

#: hits whose texts feed the gate's features
GATE_DEPTH = 3
#: the gate's IDFs treat a smaller knowledge base as this many chunks (its calibration ran on 1,257)
GATE_MIN_CHUNKS = 1000
#: a lone character's chunks are counted up to this many (enough to tell 䲟 from 时)
CHAR_DF_CAP = 20000
#: fewer candidates than this: no spread of similarities to measure cosine_gap against
GAP_MIN_CANDIDATES = 8


@dataclass
class RetrievalSettings:
    """Retrieval knobs; a knowledge base stores its own defaults, a request may override them."""

    top_k: int = 5
    #: candidates taken from each leg before fusion
    candidates: int = 40
    lexical_weight: float = 1.0
    vector_weight: float = 1.0
    #: "score" (normalised score fusion) or "rrf" (reciprocal rank fusion)
    fusion: str = "score"
    #: the k of reciprocal rank fusion: score = sum(weight / (rrf_k + rank))
    rrf_k: int = 60
    #: the gate's probability a question must reach to be answered; None: the calibrated one
    min_confidence: float | None = None
    #: the vector leg runs only when the embedder knows this share of the query's tokens
    min_known: float = 0.9
    #: terms in more than this share of chunks, or in more than max_df chunks, are left out of
    #: the FTS query (they still count in the gate's coverage): they rank nothing and make the
    #: query slow on large bases
    max_df_ratio: float = 0.15
    max_df: int = 20000
    #: cells the approximate vector index scans (large knowledge bases only; None: its default)
    nprobe: int | None = None

    def updated(self, **overrides: Any) -> RetrievalSettings:
        known = {f.name for f in fields(self)}
        bad = [k for k, v in overrides.items() if v is not None and k not in known]
        if bad:
            raise InvalidRequest(f"unknown retrieval setting {bad[0]!r}", param=bad[0])
        values = asdict(self)
        values.update({k: v for k, v in overrides.items() if v is not None})
        out = RetrievalSettings(**values)
        if out.top_k < 1 or out.candidates < 1:
            raise InvalidRequest("top_k and candidates must be at least 1", param="top_k")
        if out.fusion not in ("score", "rrf"):
            raise InvalidRequest("fusion must be 'score' or 'rrf'", param="fusion")
        return out

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> RetrievalSettings:
        """Settings saved by any version: keys this version no longer has are ignored."""
        known = {f.name for f in fields(cls)}
        return cls().updated(**{k: v for k, v in stored.items() if k in known})


@dataclass
class Hit:
    """One retrieved chunk with its source and the scores from each leg."""

    chunk_id: int
    document: str
    title: str
    section: str
    page: int | None
    page_end: int | None
    text: str
    fused: float
    lexical: float  # share of the question's words in the chunk, in [0, 1]
    bm25: float | None  # None when the lexical leg did not return this chunk
    lexical_rank: int | None
    vector: float | None  # cosine similarity; None without a vector or with the leg off
    vector_rank: int | None
    relevant: bool
    row_start: int | None = None
    row_end: int | None = None

    def location(self) -> str:
        """"file.pdf, p. 3, § Section" (or "book.xlsx, § Sheet, rows 4-9") for citations."""
        parts = [self.document]
        if self.page is not None:
            pages = f"{self.page}" if self.page_end in (None, self.page) else f"{self.page}-{self.page_end}"
            parts.append(f"p. {pages}")
        if self.section:
            parts.append(f"§ {self.section}")
        if self.row_start is not None:
            rows = (f"row {self.row_start}" if self.row_end in (None, self.row_start)
                    else f"rows {self.row_start}-{self.row_end}")
            parts.append(rows)
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["location"] = self.location()
        return out


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    #: legs that ran: "lexical", "vector"
    legs: list[str]
    seconds: float
    settings: RetrievalSettings = field(repr=False, default_factory=RetrievalSettings)
    #: the gate's probability that the knowledge base answers the question
    confidence: float = 0.0
    found: bool = False
    #: the gate's inputs (bench/kb.py fits the gate on them)
    features: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "found": self.found, "confidence": round(self.confidence, 4),
                "legs": self.legs, "ms": round(self.seconds * 1000, 2), "results": [h.to_dict() for h in self.hits]}


class _QueryEmbedding:
    """The query embedded in a thread (the C engine and numpy release the GIL) while SQLite answers
    the lexical leg."""

    def __init__(self, embedder: Embedder, query: str) -> None:
        self._out: list[np.ndarray | BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(embedder, query), name="bendi-kb-embed")
        self._thread.start()

    def _run(self, embedder: Embedder, query: str) -> None:
        try:
            self._out.append(embedder.embed_query([query])[0])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._out.append(exc)

    def result(self) -> np.ndarray:
        self._thread.join()
        if isinstance(self._out[0], BaseException):
            raise self._out[0]
        return self._out[0]


def search(index: KnowledgeBaseIndex, embedder: Embedder | None, query: str, settings: RetrievalSettings,
           *, include_all: bool = False, gate: Gate | None = None) -> SearchResult:
    """Ranked chunks for `query`; empty (not found) unless the gate finds the question answerable,
    or all candidates, each marked, with `include_all`."""
    started = time.perf_counter()
    query = query.strip()
    if not query:
        raise InvalidRequest("the query is empty", param="query")
    pending: _QueryEmbedding | None = None
    if (embedder is not None and settings.vector_weight > 0 and index.n_vectors_cached() > 0
            and embedder.known_fraction(query) >= settings.min_known):
        pending = _QueryEmbedding(embedder, query)

    terms = query_terms(query)
    n = max(1, index.n_chunks())
    dfs = index.doc_freqs(terms)
    legs: list[str] = []
    lex_ranked: list[tuple[int, float]] = []
    if terms and settings.lexical_weight > 0:
        present = sorted((t for t in terms if dfs[t] > 0), key=lambda t: dfs[t])
        # very common terms rank nothing but have long posting lists: leave them out of the query
        cutoff = min(settings.max_df_ratio * n, settings.max_df)
        selective = [t for t in present if dfs[t] <= cutoff] or present[:8]
        lex_ranked = index.lexical(selective[:48], settings.candidates)
        legs.append("lexical")

    vec_ranked: list[tuple[int, float]] = []
    qvec: np.ndarray | None = None
    sims: dict[int, float] = {}
    if pending is not None:
        qvec = pending.result()
        vec_ranked = index.nearest(qvec, settings.candidates, nprobe=settings.nprobe)
        legs.append("vector")
        sims = dict(vec_ranked)
        missing = [cid for cid, _ in lex_ranked if cid not in sims]
        sims.update(index.similarities(qvec, missing))

    lex_rank = {cid: r for r, (cid, _) in enumerate(lex_ranked, 1)}
    vec_rank = {cid: r for r, (cid, _) in enumerate(vec_ranked, 1)}
    bm25 = dict(lex_ranked)
    fused = _fuse(settings, bm25, sims, lex_rank, vec_rank)
    order = sorted(fused, key=lambda c: -fused[c])
    wanted = order[: max(settings.top_k, GATE_DEPTH)] if not include_all else order
    rows = index.chunks(wanted)
    words = query_words(query)
    # the gate's IDFs count a small knowledge base as GATE_MIN_CHUNKS chunks: in a base of three
    # chunks every word the question shares with them would weigh next to nothing
    n_gate = max(n, GATE_MIN_CHUNKS)
    word_weight = _word_weights(index, words, n_gate, dfs)

    hits: list[Hit] = []
    for cid in wanted:
        row = rows.get(cid)
        if row is None:  # removed between the two reads
            continue
        matcher = TermMatcher(f"{row.title}\n{row.section}\n{row.text}")
        hits.append(Hit(cid, row.doc_name, row.title, row.section, row.page, row.page_end, row.text,
                        fused[cid], _coverage(matcher, word_weight), bm25.get(cid), lex_rank.get(cid),
                        sims.get(cid), vec_rank.get(cid), False, row.row_start, row.row_end))

    features = gate_features(query, terms, dfs, n_gate, word_weight, hits[:GATE_DEPTH], bm25, sims)
    if gate is None:
        gate = load_gate("hybrid" if "vector" in legs else "lexical")
    confidence = gate.probability(features) if hits else 0.0
    threshold = settings.min_confidence if settings.min_confidence is not None else gate.threshold
    found = bool(hits) and confidence >= threshold
    for h in hits:
        h.relevant = found
    shown = hits if include_all else (hits[: settings.top_k] if found else [])
    return SearchResult(query, shown, legs, time.perf_counter() - started, settings, confidence, found, features)


def _fuse(settings: RetrievalSettings, bm25: dict[int, float], sims: dict[int, float],
          lex_rank: dict[int, int], vec_rank: dict[int, int]) -> dict[int, float]:
    ids = set(bm25) | set(vec_rank)
    if settings.fusion == "rrf":
        out = dict.fromkeys(ids, 0.0)
        for cid, r in lex_rank.items():
            out[cid] += settings.lexical_weight / (settings.rrf_k + r)
        for cid, r in vec_rank.items():
            out[cid] += settings.vector_weight / (settings.rrf_k + r)
        return out
    top_bm25 = max(bm25.values(), default=0.0)
    cand_sims = [sims[c] for c in ids if c in sims]
    lo, hi = (min(cand_sims), max(cand_sims)) if cand_sims else (0.0, 0.0)
    out = {}
    for cid in ids:
        lexical = bm25.get(cid, 0.0) / top_bm25 if top_bm25 > 0 else 0.0
        vector = (sims[cid] - lo) / (hi - lo) if cid in sims and hi > lo else 0.0
        out[cid] = settings.lexical_weight * lexical + settings.vector_weight * vector
    return out


def _word_weights(index: KnowledgeBaseIndex, words: list[str], n: int,
                  known: dict[str, int]) -> dict[str, tuple[float, list[str]]]:
    """Each query word's weight (IDF² of its rarest bigram: a word is in at most as many chunks as
    that bigram) and its bigrams. `known`: chunk counts looked up already (the query's terms)."""
    parts = {w: word_terms(w) for w in words}
    dfs = dict(known)
    # on a large base each lookup reads the term's whole posting list: look up only new terms
    dfs.update(index.doc_freqs([t for t in dict.fromkeys(t for ts in parts.values() for t in ts) if t not in dfs]))
    for ts in parts.values():
        if len(ts) == 1 and len(ts[0]) == 1 and not ts[0].isascii():  # a lone character (䲟, 王)
            dfs[ts[0]] = max(dfs[ts[0]], index.char_doc_freq(ts[0], CHAR_DF_CAP))
    return {w: (idf(min((dfs[t] for t in ts), default=0), n) ** 2, ts) for w, ts in parts.items()}


def _coverage(matcher: TermMatcher, weights: dict[str, tuple[float, list[str]]]) -> float:
    total = sum(w for w, _ in weights.values())
    if total <= 0:
        return 0.0
    return sum(w for w, ts in weights.values() if ts and all(matcher.has(t) for t in ts)) / total


#: BM25's term-frequency saturation and length normalisation, against a fixed chunk length (in
#: terms) instead of the knowledge base's average, so the share means the same in any base
BM25_K1, BM25_B, BM25_LENGTH = 1.2, 0.75, 300


def bm25_share(hit: Hit, term_idf: dict[str, float]) -> float:
    """The hit's BM25 (headings weigh twice) as a share of the best any chunk could score on
    these terms: 1.0 = every term, repeated, in heading and text."""
    total = sum(term_idf.values())
    if total <= 0:
        return 0.0
    heading = f"{hit.title}\n{hit.section}".lower()
    text = hit.text.lower()
    norm = 1 - BM25_B + BM25_B * len(text) / BM25_LENGTH
    score = 0.0
    for term, weight in term_idf.items():
        for body, column_weight, length in ((text, 1.0, norm), (heading, 2.0, 1.0)):
            tf = body.count(term)
            if tf:
                score += weight * column_weight * tf * (BM25_K1 + 1) / (tf + BM25_K1 * length)
    return score / (total * 3.0 * (BM25_K1 + 1))


def gate_features(query: str, terms: list[str], dfs: dict[str, int], n: int,
                  word_weight: dict[str, tuple[float, list[str]]], top: list[Hit],
                  bm25: dict[int, float], sims: dict[int, float]) -> dict[str, float]:
    """The answerability gate's inputs, each normalised per query (see gate.py)."""
    term_idf = {t: idf(dfs.get(t, 0), n) for t in terms}  # BM25+'s IDF: positive in any base
    idf_total = sum(term_idf.values()) or 1.0
    coverage = window = sentence = 0.0
    missing = 1.0
    rarest = max((w for w, _ in word_weight.values()), default=0.0) or 1.0
    weight_total = sum(w for w, _ in word_weight.values()) or 1.0
    first_lacks: list[str] | None = None  # the question words the best chunk lacks
    for h in top:
        text = f"{h.title}\n{h.section}\n{h.text}"
        coverage = max(coverage, h.lexical)
        whole = TermMatcher(text)
        # how rare the rarest question word is that this chunk lacks, relative to the rarest word
        lacks = [w for w in word_weight if not whole.has_word(w)]
        missing = min(missing, max((word_weight[w][0] for w in lacks), default=0.0) / rarest)
        first_lacks = lacks if first_lacks is None else first_lacks
        heading = f"{h.title}\n{h.section}\n"
        sentences = split_sentences(h.text) or [h.text]
        for i in range(len(sentences)):
            matcher = TermMatcher(heading + "".join(sentences[max(0, i - 1) : i + 2]))
            window = max(window, sum(v for t, v in term_idf.items() if matcher.has(t)) / idf_total)
            # one sentence (with the headings) that says most of what the question asks
            one = TermMatcher(heading + sentences[i])
            sentence = max(sentence, sum(w for word, (w, _) in word_weight.items() if one.has_word(word)) / weight_total)
    shares = sorted((bm25_share(h, term_idf) for h in top), reverse=True) or [0.0]
    lacking = list(word_weight) if first_lacks is None else first_lacks
    out = {"coverage": coverage, "window": window, "sentence": sentence, "missing": missing, "bm25": shares[0],
           # how far the best chunk is ahead of the next one, and the plain share of words it lacks
           "bm25_margin": shares[0] - (shares[1] if len(shares) > 1 else 0.0),
           "missing_share": len(lacking) / max(1, len(word_weight))}
    if sims:
        values = sorted(sims.values(), reverse=True)
        best = max((h.vector for h in top if h.vector is not None), default=values[0])
        out["cosine"] = best
        if len(values) >= GAP_MIN_CANDIDATES:  # else left out: the gate takes it as average
            out["cosine_gap"] = best - float(np.median(values))
        out["cosine_margin"] = values[0] - (values[1] if len(values) > 1 else values[0])
        # both legs put the same chunk first
        lexical_first = max(bm25, key=lambda c: bm25[c]) if bm25 else None
        out["agree"] = float(lexical_first is not None and lexical_first == max(sims, key=lambda c: sims[c]))
    return out
