"""Saved conversations: `/save NAME` and `/load NAME` in `bendi run`, kept in bendi.db."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bendi.db import connect
from bendi.errors import InvalidRequest, NotFound

_NAME = re.compile(r"^[\w.:-]{1,64}$")


@dataclass
class SavedChat:
    """A conversation as saved: the model, system prompt, options and messages."""

    name: str
    model: str
    system: str | None
    options: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    updated_at: float = 0.0


class ChatStore:
    """Conversations by name in bendi.db."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def save(self, chat: SavedChat) -> SavedChat:
        """Save (or replace) `chat` under its name."""
        if not _NAME.match(chat.name):
            raise InvalidRequest(f"cannot save as {chat.name!r}: use letters, digits, '_', '-', '.' or ':'")
        chat.updated_at = time.time()
        conn = connect(self.db_path)
        try:
            conn.execute(
                "INSERT OR REPLACE INTO chats (name, model, system, options, messages, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (chat.name, chat.model, chat.system, json.dumps(chat.options, ensure_ascii=False),
                 json.dumps(chat.messages, ensure_ascii=False), chat.updated_at))
        finally:
            conn.close()
        return chat

    def load(self, name: str) -> SavedChat:
        conn = connect(self.db_path)
        try:
            row = conn.execute("SELECT * FROM chats WHERE name = ?", (name,)).fetchone()
            names = [r[0] for r in conn.execute("SELECT name FROM chats ORDER BY updated_at DESC LIMIT 10")]
        finally:
            conn.close()
        if row is None:
            known = f"; saved: {', '.join(names)}" if names else "; none saved yet (/save NAME)"
            raise NotFound(f"no saved conversation {name!r}{known}")
        return SavedChat(row["name"], row["model"], row["system"], json.loads(row["options"]),
                         json.loads(row["messages"]), row["updated_at"])
