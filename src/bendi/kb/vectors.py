"""Vectors that follow documents in the background.

Embedding is the slow part of an import (multilingual-e5 takes a tenth of a second or more per
chunk on two cores), so a document goes in with its text and lexical index in one transaction,
is searchable at once, and its chunks wait in `pending_vectors`. A worker embeds them in small
batches, each saved in its own transaction: a batch that fails (or a process that stops) leaves
its chunks waiting, never a document without its text; the next start resumes where it stopped.
Chunks of a document removed or replaced meanwhile are skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from bendi.errors import BendiError, KnowledgeBaseNotFound

log = logging.getLogger(__name__)

BATCH = 16
#: after a failed batch the worker waits this long before trying that knowledge base again
RETRY_SECONDS = 30.0


def embed_pending(index: Any, embedder: Any, min_known: float, *, batch: int = BATCH,
                  progress: Callable[[int, int], None] | None = None,
                  stop: threading.Event | None = None) -> int:
    """Embed every chunk waiting for a vector (until `stop` is set); the number of vectors saved.

    `progress(done, total)` is called after each batch, `total` counting what was waiting at the
    start plus what arrived since.
    """
    counts = index.vector_counts()
    total = counts["pending"]
    done = saved = 0
    while stop is None or not stop.is_set():
        todo = index.pending_batch(batch)
        if not todo:
            break
        ids = [cid for cid, _ in todo]
        texts = [text for _, text in todo]
        # chunks the model cannot read (mostly [UNK] for the English-only MiniLM) get no vector:
        # their similarities would be noise
        readable = [embedder.known_fraction(t) >= min_known for t in texts]
        keep_ids = [cid for cid, ok in zip(ids, readable, strict=True) if ok]
        drop_ids = [cid for cid, ok in zip(ids, readable, strict=True) if not ok]
        if keep_ids:
            vectors = embedder.embed([t for t, ok in zip(texts, readable, strict=True) if ok])
            saved += index.store_vectors(keep_ids, vectors)
        if drop_ids:
            index.store_vectors(drop_ids, None)
        done += len(ids)
        total = max(total, done + index.vector_counts()["pending"])
        if progress is not None:
            progress(done, total)
    return saved


class VectorWorker:
    """One daemon thread that embeds the pending chunks of every knowledge base it is woken for."""

    def __init__(self, index_of: Callable[[str], Any], embedder_of: Callable[[str], Any],
                 min_known_of: Callable[[str], float]) -> None:
        self._index_of = index_of
        self._embedder_of = embedder_of
        self._min_known_of = min_known_of
        self._queue: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: str | None = None
        self._errors: dict[str, tuple[str, float]] = {}

    def wake(self, name: str) -> None:
        """Embed `name`'s pending chunks soon (starts the thread on first use)."""
        with self._cond:
            if name not in self._queue:
                self._queue.append(name)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._loop, name="bendi-kb-vectors", daemon=True)
                self._thread.start()
            self._cond.notify()

    def status(self, name: str) -> dict[str, Any]:
        """{"running": bool, "error": str | None} for `name`."""
        error = self._errors.get(name)
        return {"running": self._running == name or name in self._queue,
                "error": error[0] if error else None}

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the batch in progress (its chunks stay pending if it does not finish)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    return
                name = self._queue.pop(0)
                self._running = name
            try:
                error = self._errors.get(name)
                if error is not None and time.monotonic() - error[1] < RETRY_SECONDS:
                    self._stop.wait(RETRY_SECONDS - (time.monotonic() - error[1]))
                embed_pending(self._index_of(name), self._embedder_of(name), self._min_known_of(name),
                              stop=self._stop)
                self._errors.pop(name, None)
            except KnowledgeBaseNotFound:
                self._errors.pop(name, None)  # the knowledge base was deleted meanwhile
            except BendiError as exc:
                self._failed(name, exc.message)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive one bad batch
                log.exception("embedding the pending chunks of %s failed", name)
                self._failed(name, f"{type(exc).__name__}: {exc}")
            finally:
                self._running = None

    def _failed(self, name: str, message: str) -> None:
        self._errors[name] = (message, time.monotonic())
        with self._cond:
            if name not in self._queue and not self._stop.is_set():
                self._queue.append(name)  # retried after RETRY_SECONDS
