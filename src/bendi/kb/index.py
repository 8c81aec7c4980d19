"""One knowledge base on disk: a SQLite file with documents, chunks, an FTS5 index and vectors.

Every document goes in (or is replaced, or removed) in one transaction that touches all four,
so a crash or a failing file never leaves a half-indexed document. WAL journaling keeps readers
going while a document is written.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bendi import db
from bendi.errors import BendiError, DocumentError
from bendi.kb.ann import ANN_MIN_VECTORS, AnnIndex
from bendi.kb.chunking import Chunk
from bendi.kb.segment import SEGMENTER_VERSION, segment

log = logging.getLogger(__name__)

_SCHEMA_1 = """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,      -- what users call it: path relative to what they added
        source TEXT,                    -- absolute path it was read from
        sha256 TEXT NOT NULL,           -- of the file bytes: unchanged files are skipped
        size INTEGER NOT NULL,
        format TEXT NOT NULL,
        title TEXT NOT NULL,
        pages INTEGER,
        n_chunks INTEGER NOT NULL,
        n_chars INTEGER NOT NULL,
        n_vectors INTEGER NOT NULL,
        warnings TEXT NOT NULL DEFAULT '[]',
        added_at REAL NOT NULL
    );
    CREATE TABLE chunks (
        id INTEGER PRIMARY KEY,
        doc_id INTEGER NOT NULL REFERENCES documents(id),
        ordinal INTEGER NOT NULL,
        text TEXT NOT NULL,
        section TEXT NOT NULL,
        page INTEGER,
        page_end INTEGER,
        kind TEXT NOT NULL
    );
    CREATE INDEX chunks_by_doc ON chunks(doc_id);
    CREATE TABLE vectors (chunk_id INTEGER PRIMARY KEY, vec BLOB NOT NULL);
    CREATE TABLE failures (name TEXT PRIMARY KEY, source TEXT, error TEXT NOT NULL, at REAL NOT NULL);
    -- contentless: the segmented text is not stored twice; deletes re-segment the chunk's text
    CREATE VIRTUAL TABLE chunks_fts USING fts5(heading, body, content='', tokenize='unicode61 remove_diacritics 0');
    CREATE VIRTUAL TABLE chunks_vocab USING fts5vocab(chunks_fts, 'row');
    INSERT INTO chunks_fts(chunks_fts, rank) VALUES('rank', 'bm25(2.0, 1.0)');
    """


def _schema_1(conn: sqlite3.Connection) -> None:
    for statement in db.statements(_SCHEMA_1):
        conn.execute(statement)
    conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                     [("segmenter", SEGMENTER_VERSION), ("generation", "0")])


#: migrations of a knowledge base's file (see bendi.db)
SCHEMA: list[db.Migration] = [
    _schema_1,
    # 2: vectors follow in the background (a chunk is searchable lexically first); table rows
    """
    CREATE TABLE pending_vectors (chunk_id INTEGER PRIMARY KEY);
    ALTER TABLE chunks ADD COLUMN row_start INTEGER;
    ALTER TABLE chunks ADD COLUMN row_end INTEGER;
    INSERT OR IGNORE INTO meta(key, value) VALUES ('vectors_generation', '0');
    -- chunk ids are never reused (SQLite reuses the largest rowid after a delete): a vector
    -- computed for a chunk that was replaced meanwhile, or an approximate index entry, must not
    -- land on its successor
    INSERT OR IGNORE INTO meta(key, value) SELECT 'next_chunk_id', coalesce(max(id), 0) + 1 FROM chunks;
    """,
]


@dataclass
class DocumentRow:
    id: int
    name: str
    source: str | None
    sha256: str
    size: int
    format: str
    title: str
    pages: int | None
    n_chunks: int
    n_chars: int
    n_vectors: int
    warnings: list[str]
    added_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ChunkRow:
    id: int
    doc_id: int
    doc_name: str
    title: str
    ordinal: int
    text: str
    section: str
    page: int | None
    page_end: int | None
    kind: str
    row_start: int | None = None
    row_end: int | None = None


def embedding_text(title: str, section: str, text: str) -> str:
    """What is embedded for a chunk: its headings (title, section path) and its text."""
    heading = section if section.startswith(title) else " > ".join(p for p in (title, section) if p)
    return f"{heading}\n{text}".strip()


def _heading(title: str, section: str) -> str:
    return f"{title} {section}".strip()


class KnowledgeBaseIndex:
    """The SQLite file of one knowledge base. Thread-safe; other processes may write too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._vec_cache: tuple[int, np.ndarray, np.ndarray, dict[int, int]] | None = None
        self._n_chunks_cache: tuple[int, int] | None = None
        self._n_vec_cache: tuple[int, int] | None = None
        self._threads: Any = None
        self._ann: AnnIndex | None = None
        self._ann_lock = threading.RLock()
        self._ann_build: threading.Thread | None = None
        with self._lock:
            # NORMAL in WAL mode: a power cut may lose the last commits but never corrupts
            self._conn = db.open_database(path, SCHEMA, timeout=60, pragmas=("synchronous=NORMAL",),
                                       lock=self._lock)
            if self.meta("segmenter") != SEGMENTER_VERSION:
                self._rebuild_lexical()

    # -- schema and meta ---------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (or left to SQLite on a crash)."""
        with db.transaction(self._conn, self._lock) as conn:
            yield conn

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def set_meta(self, values: dict[str, str]) -> None:
        with self.transaction():
            for k, v in values.items():
                self._set_meta(k, v)

    def _bump_generation(self) -> None:
        self._conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")

    def generation(self) -> int:
        return int(self.meta("generation") or 0)

    def _bump_vectors(self) -> None:
        self._conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'vectors_generation'")

    def vectors_generation(self) -> int:
        """Changes whenever a vector is added or removed (the vector caches key on it)."""
        return int(self.meta("vectors_generation") or 0)

    def _rebuild_lexical(self) -> None:
        """Re-segment every chunk into the FTS index (after a segmenter change)."""
        with self.transaction() as conn:
            conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('delete-all')")
            rows = conn.execute(
                "SELECT c.id, c.text, c.section, d.title FROM chunks c JOIN documents d ON d.id = c.doc_id"
            ).fetchall()
            conn.executemany(
                "INSERT INTO chunks_fts(rowid, heading, body) VALUES (?, ?, ?)",
                [(r["id"], segment(_heading(r["title"], r["section"])), segment(r["text"])) for r in rows],
            )
            self._set_meta("segmenter", SEGMENTER_VERSION)
            self._bump_generation()

    # -- documents ---------------------------------------------------------------------------

    def documents(self) -> list[DocumentRow]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM documents ORDER BY name").fetchall()
        return [_doc(r) for r in rows]

    def document(self, name: str) -> DocumentRow | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM documents WHERE name = ?", (name,)).fetchone()
        return None if row is None else _doc(row)

    def failures(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._conn.execute("SELECT * FROM failures ORDER BY name")]

    def record_failure(self, name: str, source: str | None, error: str) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO failures(name, source, error, at) VALUES (?, ?, ?, ?)",
                         (name, source, error, time.time()))

    def put_document(
        self,
        *,
        name: str,
        source: str | None,
        sha256: str,
        size: int,
        format: str,
        title: str,
        pages: int | None,
        warnings: list[str],
        chunks: Sequence[Chunk],
        vectors: np.ndarray | None,
        vector_mask: Sequence[bool] | None = None,
        pending_vectors: bool = False,
    ) -> int:
        """Insert the document, replacing one of the same name, in one transaction; its id.

        With `pending_vectors` (and no `vectors`) every chunk is queued for the background
        embedder: the document is searchable lexically as soon as this returns.
        """
        if vectors is not None and vector_mask is not None and int(sum(vector_mask)) != len(vectors):
            raise BendiError("internal error: vector count does not match the mask")
        with self.transaction() as conn:
            old = conn.execute("SELECT id, title FROM documents WHERE name = ?", (name,)).fetchone()
            if old is not None:
                self._delete_doc(conn, int(old["id"]), str(old["title"]))
            cur = conn.execute(
                "INSERT INTO documents(name, source, sha256, size, format, title, pages, n_chunks, n_chars,"
                " n_vectors, warnings, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, source, sha256, size, format, title, pages, len(chunks), sum(len(c.text) for c in chunks),
                 0 if vectors is None else len(vectors), json.dumps(warnings, ensure_ascii=False), time.time()),
            )
            doc_id = int(cur.lastrowid or 0)
            heading_cache: dict[str, str] = {}
            vec_iter = iter(vectors) if vectors is not None else None
            next_id = int(conn.execute("SELECT value FROM meta WHERE key = 'next_chunk_id'").fetchone()[0])
            for i, c in enumerate(chunks):
                chunk_id = next_id + i
                conn.execute(
                    "INSERT INTO chunks(id, doc_id, ordinal, text, section, page, page_end, kind, row_start, row_end)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (chunk_id, doc_id, c.ordinal, c.text, c.section, c.page, c.page_end, c.kind, c.row_start,
                     c.row_end),
                )
                heading = heading_cache.get(c.section)
                if heading is None:
                    heading = heading_cache[c.section] = segment(_heading(title, c.section))
                conn.execute("INSERT INTO chunks_fts(rowid, heading, body) VALUES (?, ?, ?)",
                             (chunk_id, heading, segment(c.text)))
                if vec_iter is not None and (vector_mask is None or vector_mask[i]):
                    vec = np.asarray(next(vec_iter), dtype=np.float32)
                    conn.execute("INSERT INTO vectors(chunk_id, vec) VALUES (?, ?)", (chunk_id, vec.tobytes()))
                elif pending_vectors and vectors is None:
                    conn.execute("INSERT INTO pending_vectors(chunk_id) VALUES (?)", (chunk_id,))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'next_chunk_id'", (str(next_id + len(chunks)),))
            conn.execute("DELETE FROM failures WHERE name = ?", (name,))
            self._bump_generation()
            if (vectors is not None and len(vectors)) or old is not None:
                self._bump_vectors()
        return doc_id

    def remove_document(self, name: str) -> bool:
        with self.transaction() as conn:
            row = conn.execute("SELECT id, title FROM documents WHERE name = ?", (name,)).fetchone()
            conn.execute("DELETE FROM failures WHERE name = ?", (name,))
            if row is None:
                return False
            self._delete_doc(conn, int(row["id"]), str(row["title"]))
            self._bump_generation()
            self._bump_vectors()
        return True

    def _delete_doc(self, conn: sqlite3.Connection, doc_id: int, title: str) -> None:
        rows = conn.execute("SELECT id, text, section FROM chunks WHERE doc_id = ?", (doc_id,)).fetchall()
        # a contentless FTS5 table forgets a row only when given the exact terms it was indexed with
        conn.executemany(
            "INSERT INTO chunks_fts(chunks_fts, rowid, heading, body) VALUES ('delete', ?, ?, ?)",
            [(r["id"], segment(_heading(title, r["section"])), segment(r["text"])) for r in rows],
        )
        conn.execute("DELETE FROM vectors WHERE chunk_id IN (SELECT id FROM chunks WHERE doc_id = ?)", (doc_id,))
        conn.execute("DELETE FROM pending_vectors WHERE chunk_id IN (SELECT id FROM chunks WHERE doc_id = ?)",
                     (doc_id,))
        conn.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

    # -- counts ------------------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        with self._lock:
            docs, chunks = self._conn.execute(
                "SELECT count(*), coalesce(sum(n_chunks), 0) FROM documents").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"documents": int(docs), "chunks": int(chunks), "bytes": size}

    def check(self) -> list[str]:
        """Consistency problems (empty when sound): SQLite, FTS5 and the document/chunk/vector counts."""
        problems: list[str] = []
        with self._lock:
            conn = self._conn
            result = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                problems.append(f"integrity_check: {result}")
            try:
                conn.execute("INSERT INTO chunks_fts(chunks_fts) VALUES('integrity-check')")
            except sqlite3.DatabaseError as exc:
                problems.append(f"fts integrity-check: {exc}")
            n_chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            declared = conn.execute("SELECT coalesce(sum(n_chunks), 0) FROM documents").fetchone()[0]
            n_fts = conn.execute("SELECT count(*) FROM chunks_fts").fetchone()[0]
            n_vec = conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
            declared_vec = conn.execute("SELECT coalesce(sum(n_vectors), 0) FROM documents").fetchone()[0]
            orphans = conn.execute(
                "SELECT count(*) FROM chunks WHERE doc_id NOT IN (SELECT id FROM documents)").fetchone()[0]
            orphan_vec = conn.execute(
                "SELECT count(*) FROM vectors WHERE chunk_id NOT IN (SELECT id FROM chunks)").fetchone()[0]
            orphan_vec += conn.execute(
                "SELECT count(*) FROM pending_vectors WHERE chunk_id NOT IN (SELECT id FROM chunks)").fetchone()[0]
        if n_chunks != declared:
            problems.append(f"{n_chunks} chunks stored, documents declare {declared}")
        if n_fts != n_chunks:
            problems.append(f"{n_fts} rows in the full-text index for {n_chunks} chunks")
        if n_vec != declared_vec:
            problems.append(f"{n_vec} vectors stored, documents declare {declared_vec}")
        if orphans or orphan_vec:
            problems.append(f"{orphans} chunks and {orphan_vec} vectors without a document")
        return problems

    # -- vectors that follow in the background ---------------------------------------------

    def vector_counts(self) -> dict[str, int]:
        """Chunks with a vector, and chunks still waiting for one."""
        with self._lock:
            done = self._conn.execute("SELECT count(*) FROM vectors").fetchone()[0]
            pending = self._conn.execute("SELECT count(*) FROM pending_vectors").fetchone()[0]
        return {"done": int(done), "pending": int(pending)}

    def pending_batch(self, limit: int) -> list[tuple[int, str]]:
        """(chunk id, text to embed) of up to `limit` chunks waiting for a vector, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.id, c.text, c.section, d.title FROM pending_vectors p JOIN chunks c ON c.id = p.chunk_id"
                " JOIN documents d ON d.id = c.doc_id ORDER BY p.chunk_id LIMIT ?", (limit,)).fetchall()
        return [(int(r["id"]), embedding_text(r["title"], r["section"], r["text"])) for r in rows]

    def store_vectors(self, ids: Sequence[int], vectors: np.ndarray | None) -> int:
        """Save vectors of pending chunks (None: give these chunks no vector); the number saved.

        Chunks removed (or replaced) while they were being embedded are skipped: their document
        is gone, and so is their place in the queue.
        """
        with self.transaction() as conn:
            marks = ",".join("?" * len(ids))
            alive = {int(r[0]): int(r[1]) for r in conn.execute(
                f"SELECT c.id, c.doc_id FROM pending_vectors p JOIN chunks c ON c.id = p.chunk_id"
                f" WHERE p.chunk_id IN ({marks})", list(ids))}
            saved: dict[int, int] = {}
            if vectors is not None:
                for cid, vec in zip(ids, vectors, strict=True):
                    if cid in alive:
                        conn.execute("INSERT OR REPLACE INTO vectors(chunk_id, vec) VALUES (?, ?)",
                                     (cid, np.asarray(vec, np.float32).tobytes()))
                        saved[alive[cid]] = saved.get(alive[cid], 0) + 1
            conn.execute(f"DELETE FROM pending_vectors WHERE chunk_id IN ({marks})", list(ids))
            for doc_id, n in saved.items():
                conn.execute("UPDATE documents SET n_vectors = n_vectors + ? WHERE id = ?", (n, doc_id))
            if saved:
                self._bump_vectors()
        return sum(saved.values())

    def vectors_of(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored vectors of these chunks (those that have one)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._conn.execute(f"SELECT chunk_id, vec FROM vectors WHERE chunk_id IN ({marks})",
                                      list(ids)).fetchall()
        return {int(r[0]): np.frombuffer(r[1], dtype=np.float32) for r in rows}

    # -- search primitives -------------------------------------------------------------------

    def n_chunks(self) -> int:
        """Chunks in the index, cached until the next write (summing 50,000 documents took 5 ms)."""
        gen = self.generation()
        if self._n_chunks_cache is not None and self._n_chunks_cache[0] == gen:
            return self._n_chunks_cache[1]
        with self._lock:
            n = int(self._conn.execute("SELECT coalesce(sum(n_chunks), 0) FROM documents").fetchone()[0])
        self._n_chunks_cache = (gen, n)
        return n

    def doc_freqs(self, terms: Sequence[str]) -> dict[str, int]:
        """How many chunks contain each term (0 for unknown terms)."""
        if not terms:
            return {}
        marks = ",".join("?" * len(terms))
        with self._lock:
            rows = self._conn.execute(f"SELECT term, doc FROM chunks_vocab WHERE term IN ({marks})",
                                      list(terms)).fetchall()
        found = {str(r[0]): int(r[1]) for r in rows}
        return {t: found.get(t, 0) for t in terms}

    def char_doc_freq(self, char: str, cap: int) -> int:
        """How many chunks hold a Chinese character (counted up to `cap`): the index keeps bigrams,
        so this counts the chunks with a bigram that starts with it (or the lone character)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT count(*) FROM (SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
                (f'"{char}"*', cap)).fetchone()
        return int(row[0])

    def lexical(self, terms: Sequence[str], limit: int) -> list[tuple[int, float]]:
        """(chunk id, BM25 score, higher is better) for chunks matching any of `terms`."""
        if not terms:
            return []
        parts = []
        for t in terms:
            # a lone CJK character matches the bigrams that start with it
            parts.append(f'"{t}"*' if len(t) == 1 and not t.isascii() else f'"{t}"')
        query = " OR ".join(parts)
        with self._lock:
            rows = self._conn.execute(
                "SELECT rowid, rank FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT ?",
                (query, limit),
            ).fetchall()
        return [(int(r[0]), -float(r[1])) for r in rows]

    def vector_matrix(self) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
        """(chunk ids, matrix of vectors, id -> row), cached until vectors change."""
        gen = self.vectors_generation()
        cache = self._vec_cache
        if cache is not None and cache[0] == gen:
            return cache[1], cache[2], cache[3]
        with self._lock:
            rows = self._conn.execute("SELECT chunk_id, vec FROM vectors ORDER BY chunk_id").fetchall()
        dim = int(self.meta("dim") or 0)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if rows:
            matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        else:
            matrix = np.zeros((0, dim), np.float32)
        where = {int(c): i for i, c in enumerate(ids)}
        self._vec_cache = (gen, ids, matrix, where)
        return ids, matrix, where

    def n_vectors(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def vector_ids(self) -> np.ndarray:
        """Sorted chunk ids that have a vector."""
        with self._lock:
            rows = self._conn.execute("SELECT chunk_id FROM vectors ORDER BY chunk_id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vector_rows(self, ids: np.ndarray) -> np.ndarray:
        """The vectors of `ids` (which all have one), in that order, as one float32 matrix."""
        dim = int(self.meta("dim") or 0)
        out = np.zeros((len(ids), dim), np.float32)
        where = {int(c): i for i, c in enumerate(ids)}
        for start in range(0, len(ids), 10_000):
            part = [int(x) for x in ids[start : start + 10_000]]
            found = self.vectors_of(part)
            for cid, vec in found.items():
                out[where[cid]] = vec
        return out

    def nearest(self, query: np.ndarray, k: int, *, nprobe: int | None = None) -> list[tuple[int, float]]:
        """Top-k (chunk id, cosine) of the vector leg: an exact scan on small knowledge bases, the
        approximate index (ann.py) on large ones, with exact similarities either way."""
        if self.n_vectors_cached() >= ANN_MIN_VECTORS:
            ann = self.ann_index(wait=False)
            if ann is not None:
                approx = ann.search(query, max(k, 2 * k), nprobe)
                exact = self.similarities(query, [cid for cid, _ in approx])
                ranked = sorted(exact.items(), key=lambda kv: -kv[1])
                return ranked[:k]
        ids, matrix, _ = self.vector_matrix()
        if not len(ids):
            return []
        sims = self._matvec(matrix, query)
        k = min(k, len(ids))
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top])]
        return [(int(ids[i]), float(sims[i])) for i in top]

    def similarities(self, query: np.ndarray, ids: Sequence[int]) -> dict[int, float]:
        """Exact cosine of the query with each of these chunks that has a vector."""
        if not ids:
            return {}
        cache = self._vec_cache
        if cache is not None and cache[0] == self.vectors_generation():
            _, _, matrix, where = cache
            rows = [(cid, where[cid]) for cid in ids if cid in where]
            if not rows:
                return {}
            sims = matrix[[r for _, r in rows]] @ query.astype(np.float32)
            return {cid: float(v) for (cid, _), v in zip(rows, sims, strict=True)}
        found = self.vectors_of(list(ids))
        return {cid: float(vec @ query.astype(np.float32)) for cid, vec in found.items()}

    def _matvec(self, matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
        if self._threads is None:
            from threadpoolctl import ThreadpoolController

            self._threads = ThreadpoolController()
        # one matrix-vector product is memory-bound: extra BLAS threads only add wake-up stalls
        with self._threads.limit(limits=1, user_api="blas"):
            return matrix @ query.astype(np.float32)  # type: ignore[no-any-return]

    def n_vectors_cached(self) -> int:
        gen = self.vectors_generation()
        if self._n_vec_cache is None or self._n_vec_cache[0] != gen:
            self._n_vec_cache = (gen, self.n_vectors())
        return self._n_vec_cache[1]

    def ann_index(self, *, wait: bool = True) -> AnnIndex | None:
        """The approximate index, loaded, brought up to date or (re)built; None while a build runs
        in the background (`wait=False`), when callers scan exactly instead."""
        with self._ann_lock:
            if self._ann is None:
                self._ann = AnnIndex(self.path.parent / "vectors.faiss", int(self.meta("dim") or 0))
                self._ann.load()
            ann = self._ann
            gen = self.vectors_generation()
            if ann.ready and ann.generation == gen:
                return ann
            if self._ann_build is not None and self._ann_build.is_alive():
                return None if not wait else self._wait_build()
            n = self.n_vectors()
            if ann.needs_rebuild(n):
                self._ann_build = threading.Thread(target=self._build_ann, args=(gen,), name="bendi-kb-ann",
                                                   daemon=True)
                self._ann_build.start()
                return None if not wait else self._wait_build()
            added, removed = ann.sync(self.vector_ids(), self.vector_rows, gen)
            if added + removed > 10_000:
                ann.save()
            return ann

    def _wait_build(self) -> AnnIndex | None:
        build = self._ann_build
        if build is not None:
            build.join()
        return self._ann

    def _build_ann(self, generation: int) -> None:
        try:
            assert self._ann is not None
            self._ann.build(self.vector_ids(), self.vector_rows, generation)
            self._ann.save()
        except Exception:  # noqa: BLE001 - searches fall back to the exact scan
            log.exception("building the vector index of %s failed", self.path)

    def chunks(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.*, d.name AS doc_name, d.title AS title FROM chunks c JOIN documents d"
                f" ON d.id = c.doc_id WHERE c.id IN ({marks})", list(ids)).fetchall()
        return {int(r["id"]): ChunkRow(int(r["id"]), int(r["doc_id"]), r["doc_name"], r["title"], int(r["ordinal"]),
                                       r["text"], r["section"], r["page"], r["page_end"], r["kind"],
                                       r["row_start"], r["row_end"]) for r in rows}

    def document_chunks(self, name: str) -> list[ChunkRow]:
        with self._lock:
            rows = self._conn.execute("SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id"
                                      " WHERE d.name = ? ORDER BY c.ordinal", (name,)).fetchall()
        found = self.chunks([int(r[0]) for r in rows])
        return [found[int(r[0])] for r in rows]

    def close(self) -> None:
        build = self._ann_build
        if build is not None:
            build.join()
        if self._ann is not None and self._ann.dirty_since is not None:
            try:
                self._ann.save()
            except Exception:  # noqa: BLE001 - the index is a cache; the next open syncs it
                log.warning("saving the vector index failed", exc_info=True)
        with self._lock:
            self._conn.close()


def _doc(row: sqlite3.Row) -> DocumentRow:
    return DocumentRow(
        int(row["id"]), row["name"], row["source"], row["sha256"], int(row["size"]), row["format"], row["title"],
        row["pages"], int(row["n_chunks"]), int(row["n_chars"]), int(row["n_vectors"]),
        json.loads(row["warnings"] or "[]"), float(row["added_at"]),
    )


def idf(df: int, n: int) -> float:
    """BM25's inverse document frequency; a term no chunk contains gets the largest value."""
    return math.log(1.0 + (n - df + 0.5) / (df + 0.5))


__all__ = ["KnowledgeBaseIndex", "DocumentRow", "ChunkRow", "idf", "DocumentError"]
