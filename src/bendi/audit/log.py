"""The audit log: one hash-chained record per request that reaches a model or a knowledge base,
per admin action and per login; queried, exported, pruned by age and verified.

Records reach the table through the background writer (`writer.py`), so a request only pays for
putting an entry on a queue. The log is also an observer of the generation service
(`bendi.core.observe`): every generation and embedding, from any entry point, arrives here once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bendi import db
from bendi.audit.chain import FIELDS, GENESIS, Anchor, Verification, anchor_mac, record_hash, verify
from bendi.audit.writer import BackgroundWriter
from bendi.core.context import RequestContext
from bendi.core.observe import Admission, GenerationRecord
from bendi.errors import InvalidRequest

log = logging.getLogger(__name__)

#: columns of the audit table in the order exports list them
COLUMNS = ("seq", "ts", "time", "kind", "route", "action", "user", "key_id", "client", "model",
           "knowledge_base", "documents", "prompt_tokens", "completion_tokens", "status", "code", "error",
           "latency_us", "request_id", "detail", "prompt", "answer", "prev_hash", "hash")
_INSERT_COLUMNS = (*FIELDS, "hash")
_INSERT = f"INSERT INTO audit({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(_INSERT_COLUMNS))})"
#: how long the "record text" setting is cached (it is changed by an admin, possibly elsewhere)
SETTING_TTL = 2.0


@dataclass
class AuditEntry:
    """One thing that happened, before it is numbered and chained."""

    kind: str
    route: str
    status: str
    action: str | None = None
    user: str | None = None
    key_id: str | None = None
    client: str | None = None
    model: str | None = None
    knowledge_base: str | None = None
    documents: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    code: int | None = None
    error: str | None = None
    #: seconds
    latency: float = 0.0
    request_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    prompt: Any = None
    answer: str | None = None
    time: float = field(default_factory=time.time)

    @classmethod
    def of(cls, context: RequestContext, kind: str, status: str, **fields: Any) -> AuditEntry:
        """An entry for what `context`'s caller did."""
        return cls(kind=kind, route=context.route, status=status, user=context.principal,
                   key_id=context.api_key_id, client=context.client, request_id=context.request_id, **fields)

    def row(self, seq: int, prev_hash: str) -> dict[str, Any]:
        prompt = self.prompt
        if prompt is not None and not isinstance(prompt, str):
            prompt = _json(prompt)
        row = {
            "seq": seq, "ts": int(round(self.time * 1_000_000)), "kind": self.kind, "route": self.route,
            "action": self.action, "user": self.user, "key_id": self.key_id, "client": self.client,
            "model": self.model, "knowledge_base": self.knowledge_base, "documents": _json(list(self.documents)),
            "prompt_tokens": int(self.prompt_tokens), "completion_tokens": int(self.completion_tokens),
            "status": self.status, "code": self.code, "error": self.error,
            "latency_us": int(round(self.latency * 1_000_000)), "request_id": self.request_id,
            "detail": _json(self.detail), "prompt": prompt, "answer": self.answer, "prev_hash": prev_hash,
        }
        row["hash"] = record_hash(row)
        return row


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _json(value: Any) -> str:
    if not value:  # most records: no documents, no detail
        return "[]" if isinstance(value, list) else "{}" if isinstance(value, dict) else _ENCODER.encode(value)
    return _ENCODER.encode(value)


class AuditLog:
    """The audit table in bendi.db: append (through the writer), query, export, prune, verify."""

    def __init__(self, db_path: Path, key_path: Path, writer: BackgroundWriter) -> None:
        self.db_path = db_path
        self.key_path = key_path
        self.writer = writer
        writer.handle("audit", self._write_batch)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._key: bytes | None = None
        self._text: tuple[bool, float] = (False, 0.0)

    # -- adding records ------------------------------------------------------------------------

    def add(self, entry: AuditEntry) -> None:
        """Queue `entry`; it is numbered, chained and written in the background."""
        self.writer.submit("audit", entry)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every entry added so far is written."""
        return self.writer.flush(timeout)

    # -- the observer hook (bendi.core.observe) ------------------------------------------------

    @property
    def wants_text(self) -> bool:
        """Whether records carry prompts and answers: only while an admin has turned it on."""
        value, read_at = self._text
        if time.monotonic() - read_at > SETTING_TTL:
            value = self._meta("record_text") == "1"
            self._text = (value, time.monotonic())
        return value

    def admit(self, admission: Admission) -> None:
        return None  # the audit log refuses nothing; it records refusals

    def record(self, record: GenerationRecord) -> None:
        """One generation or embedding, however it ended."""
        text = self.wants_text
        done = record.done
        detail: dict[str, Any] = {}
        if record.finish_reason:
            detail["finish_reason"] = record.finish_reason
        if record.cached_tokens:
            detail["cached_tokens"] = record.cached_tokens
        if done is not None and done.ttft:
            detail["ttft_ms"] = round(done.ttft * 1000, 1)
        self.add(AuditEntry.of(
            record.context, record.kind, record.status, model=record.model,
            knowledge_base=record.knowledge_base, documents=record.documents,
            prompt_tokens=record.prompt_tokens, completion_tokens=record.completion_tokens,
            code=record.error.status if record.error else None,
            error=record.error.message if record.error else None, latency=record.latency, detail=detail,
            prompt=record.prompt if text else None, answer=record.answer if text else None))

    # -- settings ------------------------------------------------------------------------------

    def set_record_text(self, on: bool, actor: RequestContext) -> None:
        """Turn recording of prompts and answers on or off (itself an audited admin action)."""
        with self._lock, db.transaction(self._db()):
            self._db().execute("INSERT OR REPLACE INTO audit_meta VALUES ('record_text', ?)", ("1" if on else "0",))
        self._text = (on, time.monotonic())
        self.add(AuditEntry.of(actor, "admin", "ok", action="audit.text", detail={"record_text": on}))

    # -- the chain -----------------------------------------------------------------------------

    def key(self) -> bytes:
        """The key that signs the head and base anchors (created on first use, mode 0600)."""
        if self._key is None:
            self.key_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_bytes(32))
            self._key = self.key_path.read_bytes()
            if len(self._key) < 32:
                raise InvalidRequest(f"{self.key_path} is damaged (shorter than 32 bytes)")
        return self._key

    def _write_batch(self, conn: sqlite3.Connection, entries: list[AuditEntry]) -> None:
        dropped = self.writer.take_dropped()
        if dropped:
            entries = [AuditEntry(kind="admin", route="audit writer", status="error", action="audit.dropped",
                                  error=f"{dropped} records were lost: the queue was full",
                                  detail={"dropped": dropped}), *entries]
        self._append(conn, entries)

    def _append(self, conn: sqlite3.Connection, entries: Iterable[AuditEntry]) -> None:
        """Number, chain and insert `entries`, then move the signed head (inside a transaction)."""
        head = _anchor(conn, "head") or _anchor(conn, "base") or Anchor(0, GENESIS)
        seq, prev = head.seq, head.digest
        values = []
        for entry in entries:
            seq += 1
            row = entry.row(seq, prev)
            values.append(tuple(row[c] for c in _INSERT_COLUMNS))
            prev = row["hash"]
        conn.executemany(_INSERT, values)
        _set_anchor(conn, "head", Anchor(seq, prev, anchor_mac(self.key(), "head", seq, prev)))

    def head(self) -> Anchor:
        """The last record's number and hash (write it down elsewhere to anchor `verify` later)."""
        self.flush()
        with self._lock:
            return _anchor(self._db(), "head") or Anchor(0, GENESIS)

    def verify(self, anchors: Iterable[Anchor] = ()) -> Verification:
        """Check the whole chain from its base to its signed head (and any anchors given)."""
        self.flush()
        with self._lock:
            conn = self._db()
            # one read transaction: a consistent snapshot while writers keep appending
            conn.execute("BEGIN")
            try:
                base = _anchor(conn, "base") or Anchor(0, GENESIS)
                head = _anchor(conn, "head")
                rows = conn.execute("SELECT * FROM audit ORDER BY seq")
                return verify(rows, base, head, self.key(), anchors)
            finally:
                conn.execute("COMMIT")

    def prune(self, older_than: float, actor: RequestContext) -> int:
        """Remove records older than `older_than` seconds from the start of the chain; a signed
        checkpoint (the base) keeps the rest verifiable. Returns how many were removed."""
        cutoff = int((time.time() - older_than) * 1_000_000)
        self.flush()
        with self._lock, db.transaction(self._db()) as conn:
            keep = conn.execute("SELECT MIN(seq) FROM audit WHERE ts >= ?", (cutoff,)).fetchone()[0]
            head = _anchor(conn, "head")
            if head is None:
                return 0
            last_removed = (keep - 1) if keep is not None else head.seq
            base = _anchor(conn, "base") or Anchor(0, GENESIS)
            if last_removed <= base.seq:
                removed = 0
            else:
                digest = conn.execute("SELECT hash FROM audit WHERE seq = ?", (last_removed,)).fetchone()[0]
                removed = conn.execute("DELETE FROM audit WHERE seq <= ?", (last_removed,)).rowcount
                _set_anchor(conn, "base", Anchor(last_removed, digest,
                                                 anchor_mac(self.key(), "base", last_removed, digest)))
            # the pruning itself is a record, written in the same transaction as the checkpoint
            self._append(conn, [AuditEntry.of(actor, "admin", "ok", action="audit.prune",
                                              detail={"removed": removed, "through_seq": last_removed,
                                                      "older_than_seconds": older_than})])
        return removed

    # -- reading -------------------------------------------------------------------------------

    def query(self, *, since: float | None = None, until: float | None = None, user: str | None = None,
              kind: str | None = None, status: str | None = None, knowledge_base: str | None = None,
              before_seq: int | None = None, limit: int | None = 100, newest_first: bool = True,
              ) -> list[dict[str, Any]]:
        """Records matching every filter given, newest first (paging back with `before_seq`)."""
        return list(self._select(since=since, until=until, user=user, kind=kind, status=status,
                                 knowledge_base=knowledge_base, before_seq=before_seq, limit=limit,
                                 newest_first=newest_first))

    def _select(self, *, since: float | None, until: float | None, user: str | None = None,
                kind: str | None = None, status: str | None = None, knowledge_base: str | None = None,
                before_seq: int | None = None, limit: int | None = None,
                newest_first: bool = False) -> Iterator[dict[str, Any]]:
        self.flush()
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("user", user), ("kind", kind), ("status", status),
                              ("knowledge_base", knowledge_base)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("ts >= ?")
            args.append(int(since * 1_000_000))
        if until is not None:
            where.append("ts < ?")
            args.append(int(until * 1_000_000))
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY seq DESC" if newest_first else " ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db().execute(sql, args).fetchall()
        for row in rows:
            yield _export_row(row)

    def export(self, out: TextIO, fmt: str, *, since: float | None = None, until: float | None = None,
               user: str | None = None, kind: str | None = None, status: str | None = None,
               knowledge_base: str | None = None) -> int:
        """Write the records matching the filters (those of `query`) as JSON lines or CSV, oldest
        first; returns how many. JSON lines carry the hashes, so the export can be checked against
        the chain later."""
        if fmt not in ("jsonl", "csv"):
            raise InvalidRequest(f"unknown export format {fmt!r}: use jsonl or csv", param="format")
        n = 0
        writer = csv.DictWriter(out, fieldnames=COLUMNS) if fmt == "csv" else None
        if writer is not None:
            writer.writeheader()
        for row in self._select(since=since, until=until, user=user, kind=kind, status=status,
                                knowledge_base=knowledge_base):
            if writer is not None:
                writer.writerow({k: _csv(v) for k, v in row.items()})
            else:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
        return n

    def export_text(self, fmt: str, **filters: Any) -> str:
        buf = io.StringIO()
        self.export(buf, fmt, **filters)
        return buf.getvalue()

    # -- plumbing ------------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                self._conn = db.connect(self.db_path)
            return self._conn

    def _meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db().execute("SELECT value FROM audit_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _anchor(conn: sqlite3.Connection, label: str) -> Anchor | None:
    row = conn.execute("SELECT value FROM audit_meta WHERE key = ?", (label,)).fetchone()
    if row is None:
        return None
    data = json.loads(row[0])
    return Anchor(int(data["seq"]), str(data["hash"]), data.get("mac"))


def _set_anchor(conn: sqlite3.Connection, label: str, anchor: Anchor) -> None:
    conn.execute("INSERT OR REPLACE INTO audit_meta VALUES (?, ?)",
                 (label, json.dumps({"seq": anchor.seq, "hash": anchor.digest, "mac": anchor.mac})))


def _export_row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(row["ts"] / 1e6)) + f".{row['ts'] % 1_000_000:06d}Z"
    return {k: out[k] for k in COLUMNS}


def _csv(value: Any) -> Any:
    return "" if value is None else value


def parse_anchor(text: str) -> Anchor:
    """`SEQ:HASH` as `bendi audit head` prints it."""
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise InvalidRequest(f"invalid anchor {text!r}: expected SEQ:HASH as `bendi audit head` prints it")
    return Anchor(int(seq), digest.lower())
