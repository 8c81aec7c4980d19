"""The hash chain of the audit log: canonical serialisation, record hashes, anchors, verification.

Each record's hash is SHA-256 over its canonical serialisation, which includes its sequence number
and the hash of the record before it: changing, inserting or removing a record breaks the link to
every record after it. The last record (the head) and the first kept one after pruning (the base)
are anchored in `audit_meta` with an HMAC under a key kept outside the database
(BENDI_HOME/audit.key), so cutting records off the tail, or rewriting the whole chain from some
point on, is caught too unless the attacker also holds that key. docs/security.md says what is
and is not detected.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: the fields a record's hash covers, in the record's own table order (the hash itself aside)
FIELDS = ("seq", "ts", "kind", "route", "action", "user", "key_id", "client", "model", "knowledge_base",
          "documents", "prompt_tokens", "completion_tokens", "status", "code", "error", "latency_us",
          "request_id", "detail", "prompt", "answer", "prev_hash")
#: the "previous hash" of the very first record
GENESIS = "0" * 64


#: one encoder, made once (json.dumps with arguments builds a new one per call)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash is computed over: a JSON object of FIELDS, keys sorted, no
    whitespace, UTF-8. Every value is a string, an integer or null, so this is exact."""
    return _CANONICAL.encode({f: row[f] for f in FIELDS}).encode("utf-8")


def record_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(row)).hexdigest()


def anchor_mac(key: bytes, label: str, seq: int, digest: str) -> str:
    """The HMAC that vouches for an anchor (`head` or `base`) at record `seq` with hash `digest`."""
    return hmac.new(key, f"{label}:{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Anchor:
    """A point in the chain: record `seq` has hash `digest` (seq 0 with GENESIS: the start)."""

    seq: int
    digest: str
    mac: str | None = None

    def valid(self, key: bytes, label: str) -> bool:
        if self.seq == 0 and self.digest == GENESIS and self.mac is None:
            return True  # nothing written or pruned yet
        return self.mac is not None and hmac.compare_digest(self.mac, anchor_mac(key, label, self.seq, self.digest))


@dataclass
class Verification:
    """What `verify` found: ok, or the first bad record (`seq`) and why."""

    ok: bool
    checked: int
    first: int | None
    last: int | None
    bad_seq: int | None = None
    problem: str | None = None

    def summary(self) -> str:
        if self.ok:
            if not self.checked:
                return "audit log verified: no records"
            return f"audit log verified: {self.checked} records ({self.first}..{self.last}), chain and head intact"
        where = f"record {self.bad_seq}: " if self.bad_seq is not None else ""
        return f"audit log broken at {where}{self.problem}"


def verify(rows: Iterable[Mapping[str, Any]], base: Anchor, head: Anchor | None, key: bytes,
           anchors: Iterable[Anchor] = ()) -> Verification:
    """Check `rows` (in seq order) link from `base` to `head`, and every external anchor
    (a (seq, hash) an admin wrote down earlier) still holds."""
    wanted = {a.seq: a.digest for a in anchors}
    checked, first, last = 0, None, None

    def bad(seq: int | None, problem: str) -> Verification:
        return Verification(False, checked, first, last, seq, problem)

    if not base.valid(key, "base"):
        return bad(base.seq, "the checkpoint left by pruning does not carry a valid signature "
                             "(records were removed from the start of the log)")
    prev, expected = base.digest, base.seq + 1
    if base.seq in wanted and wanted.pop(base.seq) != base.digest:
        return bad(base.seq, "does not match the anchor given")
    for row in rows:
        seq = int(row["seq"])
        if seq < expected:
            return bad(seq, "lies before the checkpoint left by pruning (inserted)")
        if seq > expected:
            missing = f"record {expected}" if seq == expected + 1 else f"records {expected}..{seq - 1}"
            return bad(expected, f"missing ({missing} deleted)")
        if row["prev_hash"] != prev:
            return bad(seq, f"does not link to record {seq - 1} (a record before it was changed, "
                            "inserted or removed)")
        if record_hash(row) != row["hash"]:
            return bad(seq, "edited: its contents do not match its hash")
        if seq in wanted and wanted.pop(seq) != row["hash"]:
            return bad(seq, "does not match the anchor given (the log was rewritten from here on)")
        prev, expected = row["hash"], seq + 1
        first = seq if first is None else first
        last, checked = seq, checked + 1
    end = expected - 1
    if wanted:
        seq = min(wanted)
        return bad(seq, "the anchor given points past the end of the log (records deleted)")
    if head is None:
        if end != base.seq:
            return bad(None, "the log has records but no signed head")
        return Verification(True, checked, first, last)
    if not head.valid(key, "head"):
        return bad(head.seq, "the head's signature is not valid (the head was rewritten: records "
                             "were edited, added or removed and the chain recomputed)")
    if head.seq > end:
        missing = f"record {head.seq}" if head.seq == end + 1 else f"records {end + 1}..{head.seq}"
        return bad(end + 1, f"missing at the tail ({missing} deleted; the log ends at {end})")
    if head.seq < end:
        return bad(head.seq + 1, f"added after the signed head (record {head.seq}) outside bendi")
    if head.digest != prev:
        return bad(end, "differs from the signed head (the tail was rewritten)")
    return Verification(True, checked, first, last)
