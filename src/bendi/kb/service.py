"""KnowledgeBaseService: what the CLI and the server call. No click, no FastAPI.

A thin facade over the rooms that do the work: registry.py (which knowledge bases exist, their
settings and index files), embedders.py (which embedder each uses), ingest.py (adding documents),
vectors.py (embedding their chunks afterwards), retrieval.py (search) and answering.py (the
sources and the request for a cited answer; the generation service in bendi.core runs it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bendi.config import Settings
from bendi.errors import BendiError, Conflict, NotFound
from bendi.kb import answering
from bendi.kb.answer import not_found_text
from bendi.kb.answering import Retrieved
from bendi.kb.embed import BUNDLED_EMBED, E5Embedder, Embedder, MiniLMEmbedder, bundled_name
from bendi.kb.embedders import Embedders, VectorSource
from bendi.kb.index import DocumentRow, KnowledgeBaseIndex
from bendi.kb.ingest import AddResult, Ingester, expand_paths
from bendi.kb.registry import KnowledgeBaseRegistry, check_name
from bendi.kb.retrieval import RetrievalSettings, SearchResult, search
from bendi.kb.vectors import VectorWorker, embed_pending
from bendi.store import ModelStore

__all__ = ["AddResult", "KnowledgeBaseService", "Retrieved", "expand_paths"]

log = logging.getLogger(__name__)


class KnowledgeBaseService:
    """Knowledge bases under BENDI_HOME/kb, registered in bendi.db."""

    def __init__(self, settings: Settings, store: ModelStore, vectors: VectorSource) -> None:
        self.settings = settings
        self.store = store
        self.registry = KnowledgeBaseRegistry(settings)
        self.embedders = Embedders(store, vectors)
        self.ingester = Ingester(self.registry, self.embedders, ocr=self.ocr_engine, added=self._added)
        # the server embeds new documents' chunks in the background (resume_vectors); the CLI
        # does it in the foreground with a progress bar (embed_pending)
        self.background_vectors = False
        self.vectors = VectorWorker(self.index, lambda n: self.embedder(n), lambda n: self.retrieval_settings(n).min_known)
        self._ocr_lock = threading.Lock()
        self._ocr: Any = None

    # -- registry ------------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        return self.registry.exists(name)

    def create(self, name: str, *, embed: str = BUNDLED_EMBED, settings: dict[str, Any] | None = None,
               exist_ok: bool = False) -> dict[str, Any]:
        """Create a knowledge base that embeds with `embed` (the bundled model or a store model)."""
        check_name(name)
        if self.exists(name):
            if exist_ok:
                return self.info(name)
            raise Conflict(f"knowledge base {name!r} already exists")
        embed = bundled_name(embed) or embed
        retrieval = RetrievalSettings().updated(**(settings or {}).get("retrieval", {}))
        embedder = self.embedders.named(embed)
        dim = embedder.dim if embedder.dim else embedder.embed(["dimension probe"]).shape[1]
        stored = dict(settings or {})
        stored["retrieval"] = retrieval.__dict__
        self.registry.register(name, embed, dim, stored)
        return self.info(name)

    def adopt(self, name: str, directory: Path, *, embed: str, settings: dict[str, Any],
              created_at: float, replace: bool = False) -> None:
        """Register a knowledge base whose files were prepared elsewhere (a bundle being imported)."""
        check_name(name)
        if self.exists(name):
            if not replace:
                raise Conflict(f"knowledge base {name!r} already exists")
            self.remove(name)
        self.registry.adopt(name, directory, embed, settings, created_at)

    def list_all(self) -> list[dict[str, Any]]:
        return [self.info(n) for n in self.registry.names()]

    def info(self, name: str) -> dict[str, Any]:
        row = self.registry.row(name)
        index = self.index(name)
        vectors = {**index.vector_counts(), **self.vectors.status(name)}
        return {"name": name, "embed": row["embed"], "created_at": row["created_at"],
                "settings": self.registry.stored_settings(name), **index.stats(), "vectors": vectors}

    def remove(self, name: str) -> None:
        self.registry.remove(name)

    def index(self, name: str) -> KnowledgeBaseIndex:
        return self.registry.index(name)

    def retrieval_settings(self, name: str, **overrides: Any) -> RetrievalSettings:
        return self.registry.retrieval_settings(name, **overrides)

    def update_settings(self, name: str, **retrieval: Any) -> RetrievalSettings:
        """Change a knowledge base's stored retrieval defaults."""
        return self.registry.update_settings(name, **retrieval)

    # -- embedders -----------------------------------------------------------------------------

    def bundled_embedder(self) -> E5Embedder:
        """The default embedder: multilingual-e5-small."""
        return self.embedders.bundled()

    def minilm_embedder(self) -> MiniLMEmbedder:
        return self.embedders.minilm()

    def ocr_engine(self) -> Any:
        """The OCR engine, loaded on first use; None when rapidocr is not installed."""
        with self._ocr_lock:
            if self._ocr is None:
                from bendi.kb.ocr import OcrEngine

                try:
                    self._ocr = OcrEngine()
                except BendiError as exc:
                    log.warning("%s", exc.message)
                    self._ocr = False
            return self._ocr or None

    def embedder(self, name: str) -> Embedder:
        return self.ingester.embedder(name)

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

    def embed_pending(self, name: str, progress: Callable[[int, int], None] | None = None) -> int:
        """Embed the chunks of `name` still waiting for a vector, now; the number saved."""
        return embed_pending(self.index(name), self.embedder(name), self.retrieval_settings(name).min_known,
                             progress=progress)

    def resume_vectors(self) -> None:
        """Embed in the background from now on, starting with what an earlier run left pending."""
        self.background_vectors = True
        for name in self.registry.names():
            if self.index(name).vector_counts()["pending"]:
                self.vectors.wake(name)

    def _added(self, name: str) -> None:
        if self.background_vectors:
            self.vectors.wake(name)

    def add_paths(self, name: str, paths: Iterable[Path | str],
                  progress: Callable[[AddResult], None] | None = None) -> list[AddResult]:
        """Add files and directories (recursively); each file in its own transaction."""
        return self.ingester.add_paths(name, paths, progress)

    def add_file(self, name: str, path: Path, *, doc_name: str | None = None, data: bytes | None = None,
                 pages: Callable[[int, int], None] | None = None) -> AddResult:
        """Add or replace one document; never raises for a bad file, the result says why it failed.
        Searchable lexically at once; vectors follow (see embed_pending, resume_vectors)."""
        return self.ingester.add_file(name, path, doc_name=doc_name, data=data, pages=pages)

    # -- retrieval and answers -----------------------------------------------------------------

    def search(self, name: str, query: str, *, include_all: bool = False, **overrides: Any) -> SearchResult:
        """Ranked chunks, none when the gate finds the question unanswerable (unless include_all)."""
        settings = self.retrieval_settings(name, **overrides)
        return search(self.index(name), self.embedder(name), query, settings, include_all=include_all)

    def retrieve(self, name: str, question: str | None = None, *,
                 messages: list[dict[str, Any]] | None = None, top_k: int | None = None) -> Retrieved:
        """The sources for a question (or a chat's last user turn), above the threshold."""
        return answering.retrieve(self.search, name, question, messages, top_k)

    def not_found_text(self, name: str, question: str, configured: str | None = None) -> str:
        """The explicit not-found answer: `configured`, the knowledge base's own, or the default
        in the question's language."""
        return not_found_text(question, configured or self.registry.stored_settings(name).get("not_found_text"))

    def close(self) -> None:
        self.vectors.close()
        self.registry.close()
