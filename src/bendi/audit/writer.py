"""One background thread that writes what requests leave behind to bendi.db: audit records, usage
counters, the last use of API keys. A request only puts an item on a bounded queue (a few
microseconds); the thread writes whatever has gathered in one transaction.

When the queue is full (the disk cannot keep up), `submit` waits up to `block` seconds, then
drops the item and counts it; the audit log writes a record saying how many were lost, so a gap
is never silent. `flush` waits until everything submitted so far is written; `close` flushes and
stops the thread (the server calls it on shutdown, the CLI when a command ends).
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bendi import db

log = logging.getLogger(__name__)

#: writes a batch of items of one kind inside the writer's open transaction
Handler = Callable[[sqlite3.Connection, list[Any]], None]

#: how many items one transaction takes at most
BATCH = 500
#: a batch that fails is retried this many times (the file may be locked by a long transaction)
RETRIES = 5
#: after the first item of a batch, wait this long for more: one wake-up and one transaction for
#: many requests, instead of a thread switch per request on a busy server
LINGER = 0.05


class BackgroundWriter:
    """A queue of (kind, item) and the thread that writes them with the handler of their kind."""

    def __init__(self, path: Path, *, capacity: int = 10_000, block: float = 1.0, linger: float = LINGER) -> None:
        self.path = path
        self.block = block
        self.linger = linger
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=capacity)
        #: handlers in the order they write within a batch
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._submitted = 0
        self._written = 0
        self._dropped = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: set while someone waits in flush(): the writer stops lingering
        self._flushing = 0
        self._wake = threading.Event()

    def handle(self, kind: str, handler: Handler) -> None:
        """Write items of `kind` with `handler` (register before submitting)."""
        self._handlers[kind] = handler

    def submit(self, kind: str, item: Any) -> None:
        """Queue `item` for writing; never raises (a full queue drops it after `block` seconds)."""
        with self._lock:
            self._submitted += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bendi-db-writer", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait((kind, item))
        except queue.Full:
            try:
                self._queue.put((kind, item), timeout=self.block)
            except queue.Full:
                with self._lock:
                    self._dropped += 1
                    self._written += 1  # accounted for: flush must not wait for it
                    self._done.notify_all()
                log.error("bendi.db writer queue full: dropped a %s record", kind)

    def take_dropped(self) -> int:
        """How many items were dropped since the last call (the audit log records the count)."""
        with self._lock:
            n, self._dropped = self._dropped, 0
            return n

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every item submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._submitted
            self._flushing += 1
            self._wake.set()
            try:
                while self._written < target:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._thread is None or not self._thread.is_alive():
                        return self._written >= target
                    self._done.wait(left)
            finally:
                self._flushing -= 1
                if not self._flushing:
                    self._wake.clear()
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the thread."""
        self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._wake.set()
            thread = self._thread
        if thread is not None:
            self._queue.put(("", None))  # wake the thread so it sees _stopping
            thread.join(timeout)
        with self._lock:
            self._thread = None
            self._stopping = False
            self._wake.clear()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = db.connect(self.path)
            while True:
                kind, item = self._queue.get()
                batch = [] if kind == "" else [(kind, item)]
                with self._lock:
                    hurry = self._stopping or self._flushing
                if batch and not hurry:
                    self._wake.wait(self.linger)
                while len(batch) < BATCH:
                    try:
                        kind, item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if kind != "":
                        batch.append((kind, item))
                if batch:
                    self._write(conn, batch)
                with self._lock:
                    if self._stopping and self._queue.empty():
                        return
        except Exception:  # noqa: BLE001 - the writer must report, not vanish silently
            log.exception("bendi.db writer stopped")
        finally:
            if conn is not None:
                conn.close()
            with self._lock:
                self._thread = None
                self._done.notify_all()

    def _drop(self, batch: list[tuple[str, Any]]) -> None:
        log.exception("could not write %d records to bendi.db; dropped", len(batch))
        with self._lock:
            self._dropped += len(batch)

    def _write(self, conn: sqlite3.Connection, batch: list[tuple[str, Any]]) -> None:
        by_kind: dict[str, list[Any]] = {}
        for kind, item in batch:
            by_kind.setdefault(kind, []).append(item)
        for attempt in range(RETRIES):
            try:
                with db.transaction(conn):
                    for kind, handler in self._handlers.items():
                        if kind in by_kind:
                            handler(conn, by_kind[kind])
                break
            except sqlite3.OperationalError:  # locked or busy: worth another try
                if attempt == RETRIES - 1:
                    self._drop(batch)
                else:
                    time.sleep(0.2 * (attempt + 1))
            except Exception:  # noqa: BLE001 - a bug in a handler must not stop the writer
                self._drop(batch)
                break
        with self._lock:
            self._written += len(batch)
            self._done.notify_all()
