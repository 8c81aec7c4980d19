"""The knowledge-base registry: which knowledge bases exist (a table in bendi.db), their stored
settings, and their open index files under BENDI_HOME/kb/<name>/."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from bendi import db
from bendi.config import Settings
from bendi.errors import Conflict, InvalidRequest, KnowledgeBaseNotFound
from bendi.kb.index import KnowledgeBaseIndex
from bendi.kb.retrieval import RetrievalSettings

_NAME = re.compile(r"^[\w][\w.-]{0,63}$")


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidRequest(f"invalid knowledge base name {name!r}: use letters, digits, '.', '_', '-'",
                             param="name")


class KnowledgeBaseRegistry:
    """Knowledge bases registered in bendi.db, and their index files (opened once, kept open)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._indexes: dict[str, KnowledgeBaseIndex] = {}
        self._db: sqlite3.Connection | None = None

    def _registry(self) -> sqlite3.Connection:
        with self._lock:
            if self._db is None:
                self._db = db.connect(self.settings.db_path)
            return self._db

    def row(self, name: str) -> sqlite3.Row:
        """The registry row of `name`; KnowledgeBaseNotFound when there is none."""
        with self._lock:
            row = self._registry().execute("SELECT * FROM knowledge_bases WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KnowledgeBaseNotFound(f"knowledge base {name!r} not found (bendi kb ls lists them)")
        return row

    def exists(self, name: str) -> bool:
        with self._lock:
            return self._registry().execute(
                "SELECT 1 FROM knowledge_bases WHERE name = ?", (name,)).fetchone() is not None

    def register(self, name: str, embed: str, dim: int, settings: dict[str, Any]) -> None:
        """Create the index file of `name` and register it; Conflict when the name is taken."""
        directory = self.settings.kb_dir / name
        if directory.exists():
            shutil.rmtree(directory)  # left over from a create that did not register
        index = KnowledgeBaseIndex(directory / "kb.sqlite")
        index.set_meta({"name": name, "embed": embed, "dim": str(dim)})
        with self._lock:
            try:
                self._registry().execute(
                    "INSERT INTO knowledge_bases(name, embed, created_at, settings) VALUES (?, ?, ?, ?)",
                    (name, embed, time.time(), json.dumps(settings, ensure_ascii=False)))
            except sqlite3.IntegrityError:
                index.close()
                raise Conflict(f"knowledge base {name!r} already exists") from None
            self._indexes[name] = index

    def adopt(self, name: str, directory: Path, embed: str, settings: dict[str, Any],
              created_at: float) -> None:
        """Move a prepared knowledge-base directory (from a bundle) to BENDI_HOME/kb/<name> and
        register it; the directory goes away again if the registry refuses it."""
        target = self.settings.kb_dir / name
        if target.exists():
            shutil.rmtree(target)  # left over from a create that did not register
        target.parent.mkdir(parents=True, exist_ok=True)
        directory.rename(target)
        with self._lock:
            try:
                self._registry().execute(
                    "INSERT INTO knowledge_bases(name, embed, created_at, settings) VALUES (?, ?, ?, ?)",
                    (name, embed, created_at, json.dumps(settings, ensure_ascii=False)))
            except sqlite3.IntegrityError:
                shutil.rmtree(target, ignore_errors=True)
                raise Conflict(f"knowledge base {name!r} already exists") from None
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise

    def names(self) -> list[str]:
        with self._lock:
            return [r["name"] for r in self._registry().execute("SELECT name FROM knowledge_bases ORDER BY name")]

    def remove(self, name: str) -> None:
        self.row(name)
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
                self.row(name)
                index = self._indexes[name] = KnowledgeBaseIndex(self.settings.kb_dir / name / "kb.sqlite")
            return index

    def stored_settings(self, name: str) -> dict[str, Any]:
        """The JSON settings stored with `name` (retrieval defaults, not-found text, ...)."""
        return dict(json.loads(self.row(name)["settings"]))

    def retrieval_settings(self, name: str, **overrides: Any) -> RetrievalSettings:
        stored = self.stored_settings(name).get("retrieval", {})
        return RetrievalSettings.from_stored(stored).updated(**overrides)

    def update_settings(self, name: str, **retrieval: Any) -> RetrievalSettings:
        """Change a knowledge base's stored retrieval defaults."""
        current = self.retrieval_settings(name, **retrieval)
        settings = self.stored_settings(name)
        settings["retrieval"] = current.__dict__
        with self._lock:
            self._registry().execute("UPDATE knowledge_bases SET settings = ? WHERE name = ?",
                                     (json.dumps(settings, ensure_ascii=False), name))
        return current

    def close(self) -> None:
        with self._lock:
            for index in self._indexes.values():
                index.close()
            self._indexes.clear()
            if self._db is not None:
                self._db.close()
                self._db = None
