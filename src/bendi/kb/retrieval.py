"""Hybrid retrieval: lexical (FTS5 BM25) and vector candidates fused by reciprocal rank fusion,
then a relevance threshold.

What the threshold means. Each candidate gets two relevance numbers:

- lexical relevance (`lexical`): the share of the query's words (jieba words for Chinese, stemmed
  words for English; question words such as 什么/哪/what left out), weighted by squared IDF, that
  occur in the chunk or its headings (document title and section). 1.0 = every word of the
  question is in the chunk; 0.4 = words carrying 40% of the weight are there. A word that no
  chunk in the knowledge base contains gets the highest IDF, so a question about a name the
  knowledge base has never seen loses most of its relevance: that is what rejects
  out-of-knowledge-base questions.
- vector relevance (`vector`): cosine similarity of query and chunk embeddings.

A chunk passes when lexical >= min_lexical OR vector >= min_vector. The vector leg (ranking and
threshold) is only used when the embedding model knows at least `min_known` of the query's tokens:
the bundled all-MiniLM reads English only and maps most Chinese characters to [UNK], where its
similarities mean nothing. The fused RRF score orders results; it is rank-based and never
compared with a threshold.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from bendi.errors import InvalidRequest
from bendi.kb.embed import Embedder
from bendi.kb.index import KnowledgeBaseIndex, idf
from bendi.kb.segment import TermMatcher, query_words, word_terms


@dataclass
class RetrievalSettings:
    """Retrieval knobs; a knowledge base stores its own defaults, a request may override them."""

    top_k: int = 5
    #: candidates taken from each leg before fusion
    candidates: int = 40
    lexical_weight: float = 1.0
    vector_weight: float = 1.0
    #: the k of reciprocal rank fusion: score = sum(weight / (rrf_k + rank))
    rrf_k: int = 60
    #: a chunk with this IDF-weighted share of the query's terms passes (see module docstring)
    min_lexical: float = 0.45
    #: a chunk whose embedding has at least this cosine similarity to the query's passes
    min_vector: float = 0.55
    #: the vector leg runs only when the embedder knows this share of the query's tokens
    min_known: float = 0.9
    #: terms in more than this share of chunks, or in more than max_df chunks, are left out of
    #: the FTS query (they still count in lexical relevance): they rank nothing and make the
    #: query slow on large bases
    max_df_ratio: float = 0.15
    max_df: int = 5000

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
        return out


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
    lexical: float  # lexical relevance in [0, 1]
    bm25: float | None  # None when the lexical leg did not return this chunk
    lexical_rank: int | None
    vector: float | None  # cosine similarity; None without a vector or with the leg off
    vector_rank: int | None
    relevant: bool

    def location(self) -> str:
        """"file.pdf, p. 3, § Section" for citations."""
        parts = [self.document]
        if self.page is not None:
            pages = f"{self.page}" if self.page_end in (None, self.page) else f"{self.page}-{self.page_end}"
            parts.append(f"p. {pages}")
        if self.section:
            parts.append(f"§ {self.section}")
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

    @property
    def found(self) -> bool:
        return any(h.relevant for h in self.hits)

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "found": self.found, "legs": self.legs,
                "ms": round(self.seconds * 1000, 2), "results": [h.to_dict() for h in self.hits]}


def search(index: KnowledgeBaseIndex, embedder: Embedder | None, query: str, settings: RetrievalSettings,
           *, include_all: bool = False) -> SearchResult:
    """Ranked chunks for `query`; by default only those that pass the relevance threshold."""
    started = time.perf_counter()
    query = query.strip()
    if not query:
        raise InvalidRequest("the query is empty", param="query")
    # The query embedding (numpy, GIL released) runs while SQLite answers the lexical leg.
    embedding: list[np.ndarray | BaseException] = []
    embed_thread: threading.Thread | None = None
    if (embedder is not None and settings.vector_weight > 0
            and embedder.known_fraction(query) >= settings.min_known):
        model = embedder

        def embed_query() -> None:
            try:
                embedding.append(model.embed([query])[0])
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                embedding.append(exc)

        embed_thread = threading.Thread(target=embed_query, name="bendi-kb-embed")
        embed_thread.start()
    words = query_words(query)
    parts = {w: word_terms(w) for w in words}
    terms = list(dict.fromkeys(t for ts in parts.values() for t in ts))
    n = max(1, index.n_chunks())
    dfs = index.doc_freqs(terms)
    # a word is in at most as many chunks as its rarest bigram; squared IDF lets the rare words
    # (names, the subject of the question) decide, which is what separates "about something in
    # here" from "about something else that shares common words" (measured in bench/kb.py)
    weights = {w: idf(min((dfs[t] for t in ts), default=0), n) ** 2 for w, ts in parts.items()}
    total_weight = sum(weights.values())

    legs: list[str] = []
    lex_ranked: list[tuple[int, float]] = []
    if terms and settings.lexical_weight > 0:
        present = sorted((t for t in terms if dfs[t] > 0), key=lambda t: dfs[t])
        # very common terms rank nothing but have long posting lists: leave them out of the query
        cutoff = min(settings.max_df_ratio * n, settings.max_df)
        selective = [t for t in present if dfs[t] <= cutoff] or present[:8]
        lex_ranked = index.lexical(selective[:32], settings.candidates)
        legs.append("lexical")

    vec_ranked: list[tuple[int, float]] = []
    sims: np.ndarray | None = None
    where: dict[int, int] = {}
    if embed_thread is not None:
        embed_thread.join()
        if isinstance(embedding[0], BaseException):
            raise embedding[0]
        vec_ranked, sims, where = index.vector_top(index.vector_matrix(), embedding[0], settings.candidates)
        legs.append("vector")

    fused: dict[int, float] = {}
    lex_rank = {cid: r for r, (cid, _) in enumerate(lex_ranked, 1)}
    bm25 = dict(lex_ranked)
    vec_rank = {cid: r for r, (cid, _) in enumerate(vec_ranked, 1)}
    for cid, r in lex_rank.items():
        fused[cid] = fused.get(cid, 0.0) + settings.lexical_weight / (settings.rrf_k + r)
    for cid, r in vec_rank.items():
        fused[cid] = fused.get(cid, 0.0) + settings.vector_weight / (settings.rrf_k + r)

    order = sorted(fused, key=lambda c: -fused[c])
    rows = index.chunks(order)
    hits: list[Hit] = []
    for cid in order:
        row = rows.get(cid)
        if row is None:  # removed between the two reads
            continue
        matcher = TermMatcher(f"{row.title}\n{row.section}\n{row.text}")
        have = sum(w for t, w in weights.items() if matcher.has(t))
        lexical = have / total_weight if total_weight > 0 else 0.0
        vector = float(sims[where[cid]]) if sims is not None and cid in where else None
        relevant = lexical >= settings.min_lexical or (vector is not None and vector >= settings.min_vector)
        if not relevant and not include_all:
            continue
        hits.append(Hit(cid, row.doc_name, row.title, row.section, row.page, row.page_end, row.text,
                        fused[cid], lexical, bm25.get(cid), lex_rank.get(cid), vector, vec_rank.get(cid),
                        relevant))
        if len(hits) >= settings.top_k:
            break
    return SearchResult(query, hits, legs, time.perf_counter() - started, settings)
