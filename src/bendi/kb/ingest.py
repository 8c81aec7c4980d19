"""Ingest: files and folders into a knowledge base, one transaction per document.

Loader (OCR for scans and images) -> chunks -> index, with the chunks queued for vectors
(vectors.py embeds them afterwards, so a document is searchable lexically at once); a file that
fails is recorded with its reason and never stops the others. Re-adding an unchanged file does
nothing; a changed one is replaced.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bendi.errors import BendiError, DocumentError
from bendi.kb.chunking import chunk_blocks
from bendi.kb.embed import Embedder
from bendi.kb.embedders import Embedders
from bendi.kb.loaders import LoadOptions, format_of, load_document
from bendi.kb.registry import KnowledgeBaseRegistry

log = logging.getLogger(__name__)


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


class Ingester:
    """Adds documents to the knowledge bases of a registry, embedding with each one's embedder."""

    def __init__(self, registry: KnowledgeBaseRegistry, embedders: Embedders,
                 ocr: Callable[[], Any] | None = None, added: Callable[[str], None] | None = None) -> None:
        self.registry = registry
        self.embedders = embedders
        #: the OCR engine, made on first use (None when OCR is not installed)
        self.ocr = ocr
        #: called with the knowledge base's name after a document went in (wakes the embedder)
        self.added = added

    def embedder(self, name: str) -> Embedder:
        return self.embedders.named(self.registry.row(name)["embed"])

    def add_paths(self, name: str, paths: Iterable[Path | str],
                  progress: Callable[[AddResult], None] | None = None) -> list[AddResult]:
        """Add files and directories (recursively); each file in its own transaction."""
        self.registry.row(name)
        todo = expand_paths([Path(p) for p in paths])
        results = []
        for doc_name, path in todo:
            result = self.add_file(name, path, doc_name=doc_name)
            results.append(result)
            if progress is not None:
                progress(result)
        return results

    def add_file(self, name: str, path: Path, *, doc_name: str | None = None, data: bytes | None = None,
                 pages: Callable[[int, int], None] | None = None) -> AddResult:
        """Add or replace one document; never raises for a bad file, the result says why it failed.

        The document is searchable lexically when this returns; its chunks wait for vectors.
        `pages(done, total)` reports progress through long PDFs and scans.
        """
        started = time.perf_counter()
        index = self.registry.index(name)
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
            loaded = load_document(path, data, LoadOptions(ocr=self.ocr, progress=pages))
            chunks = chunk_blocks(loaded.blocks)
            if not chunks:
                raise DocumentError(f"{path.name}: no text")
            index.put_document(
                name=doc_name, source=source, sha256=digest, size=len(data), format=loaded.format,
                title=loaded.title, pages=loaded.pages, warnings=loaded.warnings, chunks=chunks,
                vectors=None, pending_vectors=True)
            if self.added is not None:
                self.added(name)
            status = "updated" if old is not None else "added"
            return AddResult(doc_name, status, len(chunks), sum(len(c.text) for c in chunks),
                             warnings=loaded.warnings, seconds=time.perf_counter() - started)
        except Exception as exc:  # one bad file must not stop the others
            message = exc.message if isinstance(exc, BendiError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, BendiError):
                log.info("adding %s failed", path, exc_info=True)
            index.record_failure(doc_name, source, message)
            return AddResult(doc_name, "failed", error=message, seconds=time.perf_counter() - started)


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
                if any(part.startswith(".") for part in rel.parts):
                    continue
                # a broken link is kept, so that it is reported ("cannot read") rather than skipped
                if not child.is_file() and not (child.is_symlink() and not child.exists()):
                    continue
                if format_of(child) is not None:
                    out.append((rel.as_posix(), child))
        else:
            out.append((path.name, path))  # missing or unsupported: add_file reports why
    return out
