"""KnowledgeBaseService: what the CLI and the server call. No click, no FastAPI."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bendi import db
from bendi.config import Settings
from bendi.errors import (
    BendiError,
    Conflict,
    DocumentError,
    InvalidRequest,
    KnowledgeBaseNotFound,
    NotFound,
)
from bendi.kb.answer import build_messages, fit_sources, last_user_text, not_found_text
from bendi.kb.chunking import chunk_blocks
from bendi.kb.embed import BUNDLED_ALIASES, BUNDLED_EMBED, Embedder, GGUFEmbedder, MiniLMEmbedder
from bendi.kb.index import DocumentRow, KnowledgeBaseIndex
from bendi.kb.loaders import format_of, load_document
from bendi.kb.retrieval import Hit, RetrievalSettings, SearchResult, search
from bendi.runtime.manager import ModelManager
from bendi.runtime.types import ChatRequest, Done, Event, SamplingParams, TextDelta, Usage
from bendi.store import ModelStore

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[\w][\w.-]{0,63}$")
#: tokens kept free for the answer when the request sets no max_tokens
DEFAULT_ANSWER_TOKENS = 512


@dataclass
class AddResult:
    """What happened to one file: added, updated, unchanged or failed (with the reason)."""

    name: str
    status: str
    chunks: int = 0
    chars: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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


class KnowledgeBaseService:
    """Knowledge bases under BENDI_HOME/kb, registered in bendi.db."""

    def __init__(self, settings: Settings, store: ModelStore, models: ModelManager) -> None:
        self.settings = settings
        self.store = store
        self.models = models
        self._lock = threading.RLock()
        self._indexes: dict[str, KnowledgeBaseIndex] = {}
        self._minilm: MiniLMEmbedder | None = None
        self._db: sqlite3.Connection | None = None

    # -- registry ------------------------------------------------------------------------------

    def _registry(self) -> sqlite3.Connection:
        with self._lock:
            if self._db is None:
                self._db = db.connect(self.settings.db_path)
            return self._db

    def _row(self, name: str) -> sqlite3.Row:
        with self._lock:
            row = self._registry().execute("SELECT * FROM knowledge_bases WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KnowledgeBaseNotFound(f"knowledge base {name!r} not found (bendi kb ls lists them)")
        return row

    def exists(self, name: str) -> bool:
        with self._lock:
            return self._registry().execute(
                "SELECT 1 FROM knowledge_bases WHERE name = ?", (name,)).fetchone() is not None

    def create(self, name: str, *, embed: str = BUNDLED_EMBED, settings: dict[str, Any] | None = None,
               exist_ok: bool = False) -> dict[str, Any]:
        """Create a knowledge base that embeds with `embed` (the bundled model or a store model)."""
        if not _NAME.match(name):
            raise InvalidRequest(f"invalid knowledge base name {name!r}: use letters, digits, '.', '_', '-'",
                                 param="name")
        if self.exists(name):
            if exist_ok:
                return self.info(name)
            raise Conflict(f"knowledge base {name!r} already exists")
        embed = BUNDLED_EMBED if embed in BUNDLED_ALIASES else embed
        retrieval = RetrievalSettings().updated(**(settings or {}).get("retrieval", {}))
        embedder = self._make_embedder(embed)
        dim = embedder.dim if embedder.dim else embedder.embed(["dimension probe"]).shape[1]
        directory = self.settings.kb_dir / name
        if directory.exists():
            shutil.rmtree(directory)  # left over from a create that did not register
        index = KnowledgeBaseIndex(directory / "kb.sqlite")
        index.set_meta({"name": name, "embed": embed, "dim": str(dim)})
        stored = dict(settings or {})
        stored["retrieval"] = retrieval.__dict__
        with self._lock:
            try:
                self._registry().execute(
                    "INSERT INTO knowledge_bases(name, embed, created_at, settings) VALUES (?, ?, ?, ?)",
                    (name, embed, time.time(), json.dumps(stored, ensure_ascii=False)))
            except sqlite3.IntegrityError:
                index.close()
                raise Conflict(f"knowledge base {name!r} already exists") from None
            self._indexes[name] = index
        return self.info(name)

    def list_all(self) -> list[dict[str, Any]]:
        with self._lock:
            names = [r["name"] for r in self._registry().execute("SELECT name FROM knowledge_bases ORDER BY name")]
        return [self.info(n) for n in names]

    def info(self, name: str) -> dict[str, Any]:
        row = self._row(name)
        stats = self.index(name).stats()
        return {"name": name, "embed": row["embed"], "created_at": row["created_at"],
                "settings": json.loads(row["settings"]), **stats}

    def remove(self, name: str) -> None:
        self._row(name)
        with self._lock:
            index = self._indexes.pop(name, None)
            if index is not None:
                index.close()
            self._registry().execute("DELETE FROM knowledge_bases WHERE name = ?", (name,))
        shutil.rmtree(self.settings.kb_dir / name, ignore_errors=True)

    def index(self, name: str) -> KnowledgeBaseIndex:
        with self._lock:
            index = self._indexes.get(name)
            if index is None:
                self._row(name)
                index = self._indexes[name] = KnowledgeBaseIndex(self.settings.kb_dir / name / "kb.sqlite")
            return index

    def retrieval_settings(self, name: str, **overrides: Any) -> RetrievalSettings:
        stored = json.loads(self._row(name)["settings"]).get("retrieval", {})
        return RetrievalSettings().updated(**stored).updated(**overrides)

    def update_settings(self, name: str, **retrieval: Any) -> RetrievalSettings:
        """Change a knowledge base's stored retrieval defaults."""
        current = self.retrieval_settings(name, **retrieval)
        settings = json.loads(self._row(name)["settings"])
        settings["retrieval"] = current.__dict__
        with self._lock:
            self._registry().execute("UPDATE knowledge_bases SET settings = ? WHERE name = ?",
                                     (json.dumps(settings, ensure_ascii=False), name))
        return current

    # -- embedders -----------------------------------------------------------------------------

    def bundled_embedder(self) -> MiniLMEmbedder:
        with self._lock:
            if self._minilm is None:
                self._minilm = MiniLMEmbedder()
            return self._minilm

    def _make_embedder(self, embed: str) -> Embedder:
        if embed == BUNDLED_EMBED:
            return self.bundled_embedder()
        record = self.store.get(embed)  # ModelNotFound when it is not there
        model_name = str(record.name)

        def run(texts: list[str]) -> tuple[list[list[float]], int]:
            loaded = self.models.acquire(model_name)
            try:
                return loaded.model.embed(texts)
            finally:
                self.models.release(loaded)

        dim = int(record.details.get("embedding_length") or 0)
        return GGUFEmbedder(model_name, run, dim)

    def embedder(self, name: str) -> Embedder:
        return self._make_embedder(self._row(name)["embed"])

    def embedder_for_model(self, model: str) -> Callable[[list[str]], tuple[list[list[float]], int]] | None:
        """For /v1/embeddings: the bundled model when `model` names it, else None (use the store)."""
        if model in BUNDLED_ALIASES:
            return self.bundled_embedder().embed_with_tokens
        return None

    # -- documents -----------------------------------------------------------------------------

    def documents(self, name: str) -> dict[str, Any]:
        index = self.index(name)
        return {"documents": [d.to_dict() for d in index.documents()], "failures": index.failures()}

    def document(self, name: str, doc: str) -> DocumentRow:
        index = self.index(name)
        found = index.document(doc)
        if found is None:
            matches = [d for d in index.documents() if Path(d.name).name == doc]
            if len(matches) == 1:
                return matches[0]
            raise NotFound(f"no document {doc!r} in knowledge base {name!r}"
                           + (" (several match; use the full name)" if matches else ""))
        return found

    def remove_document(self, name: str, doc: str) -> DocumentRow:
        found = self.document(name, doc)
        self.index(name).remove_document(found.name)
        return found

    def add_paths(self, name: str, paths: Iterable[Path | str],
                  progress: Callable[[AddResult], None] | None = None) -> list[AddResult]:
        """Add files and directories (recursively); each file in its own transaction."""
        self._row(name)
        todo = expand_paths([Path(p) for p in paths])
        results = []
        for doc_name, path in todo:
            result = self.add_file(name, path, doc_name=doc_name)
            results.append(result)
            if progress is not None:
                progress(result)
        return results

    def add_file(self, name: str, path: Path, *, doc_name: str | None = None, data: bytes | None = None) -> AddResult:
        """Add or replace one document; never raises for a bad file, the result says why it failed."""
        started = time.perf_counter()
        index = self.index(name)
        doc_name = doc_name or path.name
        source = None if data is not None else str(path.resolve())
        try:
            if data is None:
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise DocumentError(f"{path.name}: cannot read: {exc.strerror or exc}") from None
            digest = hashlib.sha256(data).hexdigest()
            old = index.document(doc_name)
            if old is not None and old.sha256 == digest:
                return AddResult(doc_name, "unchanged", old.n_chunks, old.n_chars,
                                 seconds=time.perf_counter() - started)
            loaded = load_document(path, data)
            chunks = chunk_blocks(loaded.blocks)
            if not chunks:
                raise DocumentError(f"{path.name}: no text")
            vectors, mask = self._embed_chunks(name, [f"{c.section}\n{c.text}".strip() for c in chunks])
            index.put_document(
                name=doc_name, source=source, sha256=digest, size=len(data), format=loaded.format,
                title=loaded.title, pages=loaded.pages, warnings=loaded.warnings, chunks=chunks,
                vectors=vectors, vector_mask=mask)
            status = "updated" if old is not None else "added"
            return AddResult(doc_name, status, len(chunks), sum(len(c.text) for c in chunks),
                             warnings=loaded.warnings, seconds=time.perf_counter() - started)
        except Exception as exc:  # one bad file must not stop the others
            message = exc.message if isinstance(exc, BendiError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, BendiError):
                log.info("adding %s failed", path, exc_info=True)
            index.record_failure(doc_name, source, message)
            return AddResult(doc_name, "failed", error=message, seconds=time.perf_counter() - started)

    def _embed_chunks(self, name: str, texts: list[str]) -> tuple[np.ndarray | None, list[bool] | None]:
        embedder = self.embedder(name)
        min_known = self.retrieval_settings(name).min_known
        # Chunks the model cannot read (mostly [UNK] for the English-only bundled model) get no
        # vector: their similarities would be noise, and embedding them costs most of the ingest time.
        mask = [embedder.known_fraction(t) >= min_known for t in texts]
        wanted = [t for t, keep in zip(texts, mask, strict=True) if keep]
        vectors = embedder.embed(wanted) if wanted else np.zeros((0, embedder.dim or 1), np.float32)
        return vectors, mask

    # -- retrieval and answers -----------------------------------------------------------------

    def search(self, name: str, query: str, *, include_all: bool = False, **overrides: Any) -> SearchResult:
        """Ranked chunks; only those above the relevance threshold unless include_all."""
        settings = self.retrieval_settings(name, **overrides)
        return search(self.index(name), self.embedder(name), query, settings, include_all=include_all)

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
        configured = configured or json.loads(self._row(name)["settings"]).get("not_found_text")
        return [TextDelta(not_found_text(question, configured)), Done("stop", Usage())]

    def close(self) -> None:
        with self._lock:
            for index in self._indexes.values():
                index.close()
            self._indexes.clear()
            if self._db is not None:
                self._db.close()
                self._db = None


def expand_paths(paths: list[Path]) -> list[tuple[str, Path]]:
    """(document name, file) for each file and each supported file under each directory.

    A file is named by its file name; a file found in a directory by its path relative to that
    directory, so re-adding the same folder from anywhere finds the same documents.
    """
    out: list[tuple[str, Path]] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if any(part.startswith(".") for part in rel.parts) or not child.is_file():
                    continue
                if format_of(child) is not None:
                    out.append((rel.as_posix(), child))
        else:
            out.append((path.name, path))  # missing or unsupported: add_file reports why
    return out
