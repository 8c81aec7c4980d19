"""Chat history for the web console: each user's conversations, kept in bendi.db.

A conversation is a title, the model (or `kb:<name>`) it talks to, its settings (system prompt,
temperature, ...) and its messages. The console writes the whole message list back after each
answer (a regenerated answer replaces the last one), so a conversation is one row and one JSON
list, written in one statement: nothing is ever half-saved. Every read and write names the owner;
a conversation of another user does not exist for the caller (404, never 403).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bendi import db
from bendi.errors import InvalidRequest, NotFound

#: a user's list stops here; the oldest drop off the list, not out of the database
LIST_LIMIT = 500
#: titles are cut to this many characters
TITLE_CHARS = 120
#: messages one conversation may hold (a runaway client must not grow a row without bound)
MAX_MESSAGES = 2000
_ROLES = frozenset({"system", "user", "assistant"})


class ConversationStore:
    """Conversations in bendi.db; thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                self._db = db.connect(self.path)
            yield self._db

    def summaries(self, owner: str, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
        """The owner's conversations, most recently changed first, without their messages."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT id, title, model, created_at, updated_at, json_array_length(messages) AS n_messages "
                "FROM conversations WHERE owner = ? ORDER BY updated_at DESC LIMIT ?", (owner, limit)).fetchall()
        return [dict(r) for r in rows]

    def get(self, owner: str, conversation_id: str) -> dict[str, Any]:
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM conversations WHERE id = ? AND owner = ?",
                               (conversation_id, owner)).fetchone()
        if row is None:
            raise _not_found(conversation_id)
        return _full(row)

    def create(self, owner: str, *, title: str = "", model: str = "", settings: dict[str, Any] | None = None,
               messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        checked = check_messages(messages or [])
        now = time.time()
        conversation_id = secrets.token_urlsafe(12)
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO conversations (id, owner, title, model, settings, messages, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, owner, _title(title, checked), model, _json(settings or {}), _json(checked),
                 now, now))
        return self.get(owner, conversation_id)

    def update(self, owner: str, conversation_id: str, *, title: str | None = None, model: str | None = None,
               settings: dict[str, Any] | None = None,
               messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Change the fields given; `messages` replaces the whole list."""
        changes: dict[str, Any] = {}
        if title is not None:
            changes["title"] = title.strip()[:TITLE_CHARS]
        if model is not None:
            changes["model"] = model
        if settings is not None:
            changes["settings"] = _json(settings)
        if messages is not None:
            changes["messages"] = _json(check_messages(messages))
        changes["updated_at"] = time.time()
        assignments = ", ".join(f"{column} = ?" for column in changes)  # column names are ours, not input
        with self._conn() as conn:
            cursor = conn.execute(f"UPDATE conversations SET {assignments} WHERE id = ? AND owner = ?",
                                  (*changes.values(), conversation_id, owner))
        if cursor.rowcount == 0:
            raise _not_found(conversation_id)
        return self.get(owner, conversation_id)

    def delete(self, owner: str, conversation_id: str) -> None:
        with self._conn() as conn:
            cursor = conn.execute("DELETE FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner))
        if cursor.rowcount == 0:
            raise _not_found(conversation_id)

    def delete_all(self, owner: str) -> int:
        """Remove every conversation of `owner`; how many there were."""
        with self._conn() as conn:
            return int(conn.execute("DELETE FROM conversations WHERE owner = ?", (owner,)).rowcount)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def check_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as stored: a known role and text content; other fields (reasoning, sources,
    whether it was stopped) are kept as the console sent them."""
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(f"a conversation holds at most {MAX_MESSAGES} messages", param="messages")
    for i, message in enumerate(messages):
        if message.get("role") not in _ROLES:
            raise InvalidRequest(f"messages[{i}].role must be one of {sorted(_ROLES)}", param="messages")
        if not isinstance(message.get("content", ""), str):
            raise InvalidRequest(f"messages[{i}].content must be text", param="messages")
    return messages


def _title(title: str, messages: list[dict[str, Any]]) -> str:
    title = title.strip()
    if not title:
        first = next((m.get("content", "") for m in messages if m.get("role") == "user"), "")
        title = " ".join(str(first).split())
    return title[:TITLE_CHARS]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _full(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out.pop("owner", None)
    out["settings"] = json.loads(out["settings"])
    out["messages"] = json.loads(out["messages"])
    return out


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"no conversation {conversation_id!r}")
