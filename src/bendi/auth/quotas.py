"""Quotas and usage: requests per minute and tokens per day, per user and per API key.

Admission (before a request runs) checks both limits from memory: a sliding one-minute window of
admitted requests, and today's tokens (loaded once a day per subject from the usage table, then
counted as records come in). A request over a limit is refused with `RateLimited` (429) and a
`Retry-After`: when the oldest request leaves the window, or midnight UTC for the daily tokens.
A request that starts under its token quota finishes even if it crosses it; the next one is
refused. The counters live in the server process; the CLI is not limited (it can open bendi.db
itself), but its usage is counted.

Every finished request adds to `usage` (per day, user and key) through the background writer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bendi import db
from bendi.audit.writer import BackgroundWriter
from bendi.auth.directory import Quota, Snapshot
from bendi.core.context import RequestContext
from bendi.core.observe import Admission, GenerationRecord
from bendi.errors import InvalidRequest, RateLimited

WINDOW = 60.0


def utc_day(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() if ts is None else ts))


def seconds_to_midnight(now: float | None = None) -> float:
    now = time.time() if now is None else now
    return 86400 - (now % 86400)


@dataclass(frozen=True)
class Subject:
    kind: str  # "user" or "key"
    name: str

    def __str__(self) -> str:
        return f"{'user' if self.kind == 'user' else 'API key'} {self.name}"


@dataclass
class UsageDelta:
    day: str
    user: str
    key_id: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


class Quotas:
    """The limits in force (from the auth snapshot) and the counters they are checked against."""

    def __init__(self, db_path: Path, writer: BackgroundWriter, snapshot: Callable[[], Snapshot]) -> None:
        self.db_path = db_path
        self.writer = writer
        self.snapshot = snapshot
        writer.handle("usage", _write_usage)
        self._lock = threading.Lock()
        self._windows: dict[Subject, deque[float]] = {}
        self._tokens: dict[Subject, tuple[str, int]] = {}
        self._conn: sqlite3.Connection | None = None
        self._db_lock = threading.RLock()

    # -- the checks ----------------------------------------------------------------------------

    def subjects(self, context: RequestContext) -> list[Subject]:
        out = [Subject("user", context.principal)]
        if context.api_key_id is not None:
            out.append(Subject("key", context.api_key_id))
        return out

    def check(self, context: RequestContext) -> None:
        """Admit one request of `context`'s caller, or raise RateLimited; an admitted request
        counts against the per-minute limits. Callers without a principal (the CLI, a server
        without accounts) are not limited."""
        if context.access is None:
            return
        limits = [(s, q) for s in self.subjects(context)
                  if (q := self.snapshot().quotas.get((s.kind, s.name))) is not None]
        if not limits:
            return
        now = time.time()
        with self._lock:
            for subject, quota in limits:
                self._check_tokens(subject, quota, now)
            for subject, quota in limits:
                self._check_rate(subject, quota, now)
            for subject, quota in limits:
                if quota.requests_per_minute is not None:
                    self._windows.setdefault(subject, deque()).append(now)

    def _check_rate(self, subject: Subject, quota: Quota, now: float) -> None:
        limit = quota.requests_per_minute
        if limit is None:
            return
        window = self._windows.setdefault(subject, deque())
        while window and window[0] <= now - WINDOW:
            window.popleft()
        if len(window) >= limit:
            wait = window[0] + WINDOW - now if window else WINDOW
            raise RateLimited(f"rate limit: {limit} requests per minute for {subject}; retry in {wait:.0f} s",
                              retry_after=wait)

    def _check_tokens(self, subject: Subject, quota: Quota, now: float) -> None:
        limit = quota.tokens_per_day
        if limit is None:
            return
        used = self._used_today(subject, now)
        if used >= limit:
            raise RateLimited(f"token quota: {limit} tokens per day for {subject} used up ({used}); "
                              "it resets at 00:00 UTC", retry_after=seconds_to_midnight(now))

    def _used_today(self, subject: Subject, now: float) -> int:
        day = utc_day(now)
        cached = self._tokens.get(subject)
        if cached is None or cached[0] != day:
            # once per subject and day: what is still queued must be in the table before it is read
            self.writer.flush(timeout=5.0)
            column = "user" if subject.kind == "user" else "key_id"
            with self._db_lock:
                row = self._db().execute(
                    f"SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage WHERE day = ? AND {column} = ?",
                    (day, subject.name)).fetchone()
            cached = (day, int(row[0]))
            self._tokens[subject] = cached
        return cached[1]

    # -- counting ------------------------------------------------------------------------------

    def charge(self, context: RequestContext, prompt_tokens: int, completion_tokens: int) -> None:
        """Count one finished request (its tokens against today's quotas, and in `usage`)."""
        now = time.time()
        day = utc_day(now)
        tokens = prompt_tokens + completion_tokens
        with self._lock:
            for subject in self.subjects(context):
                cached = self._tokens.get(subject)
                if cached is not None and cached[0] == day:
                    self._tokens[subject] = (day, cached[1] + tokens)
        self.writer.submit("usage", UsageDelta(day, context.principal, context.api_key_id or "", 1,
                                               prompt_tokens, completion_tokens))

    # -- the observer hook ---------------------------------------------------------------------

    wants_text = False

    def admit(self, admission: Admission) -> None:
        self.check(admission.context)

    def record(self, record: GenerationRecord) -> None:
        if record.status != "refused":
            self.charge(record.context, record.prompt_tokens, record.completion_tokens)

    # -- reading usage -------------------------------------------------------------------------

    def usage(self, *, user: str | None = None, key: str | None = None, since: float | None = None,
              by: str = "user") -> list[dict[str, Any]]:
        """Requests and tokens since `since` (default: today, UTC), grouped by user, key or day."""
        groups = {"user": ["user"], "key": ["user", "key_id"], "day": ["day"]}
        if by not in groups:
            raise InvalidRequest(f"unknown grouping {by!r}: use user, key or day", param="by")
        self.writer.flush()
        where, args = ["day >= ?"], [utc_day(since)]
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if key is not None:
            where.append("key_id = ?")
            args.append(key.removeprefix("bk_"))
        cols = ", ".join(groups[by])
        sql = (f"SELECT {cols}, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) FROM usage "
               f"WHERE {' AND '.join(where)} GROUP BY {cols} ORDER BY {cols}")
        with self._db_lock:
            rows = self._db().execute(sql, args).fetchall()
        out = []
        for r in rows:
            entry = {c: r[i] for i, c in enumerate(groups[by])}
            if "key_id" in entry:
                entry["key_id"] = entry["key_id"] or None
            entry.update(requests=r[-3], prompt_tokens=r[-2], completion_tokens=r[-1],
                         tokens=r[-2] + r[-1])
            out.append(entry)
        return out

    # -- plumbing ------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = db.connect(self.db_path)
        return self._conn

    def close(self) -> None:
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _write_usage(conn: sqlite3.Connection, deltas: list[UsageDelta]) -> None:
    merged: dict[tuple[str, str, str], list[int]] = {}
    for d in deltas:
        row = merged.setdefault((d.day, d.user, d.key_id), [0, 0, 0])
        row[0] += d.requests
        row[1] += d.prompt_tokens
        row[2] += d.completion_tokens
    conn.executemany(
        "INSERT INTO usage(day, user, key_id, requests, prompt_tokens, completion_tokens) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(day, user, key_id) DO UPDATE SET requests = requests + excluded.requests, "
        "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
        "completion_tokens = completion_tokens + excluded.completion_tokens",
        [(*k, *v) for k, v in merged.items()])
