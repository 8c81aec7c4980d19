"""bendi.db: the SQLite database for users, API keys, the audit log and the knowledge-base registry.

Schema changes are numbered migrations: MIGRATIONS[i] takes the schema from version i to i + 1
(PRAGMA user_version). Append new migrations; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MIGRATIONS: list[str] = [
    # 1: knowledge-base registry
    """
    CREATE TABLE knowledge_bases (
        name TEXT PRIMARY KEY,
        embed TEXT NOT NULL,             -- embedding model: "all-minilm" or a store model name
        created_at REAL NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'  -- JSON: retrieval defaults for this knowledge base
    );
    """,
]


def connect(path: Path) -> sqlite3.Connection:
    """Open bendi.db, creating it and applying pending migrations."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply migrations past the stored version, each in its own transaction; returns the version."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    while version < len(MIGRATIONS):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated while we waited for the write lock
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version < len(MIGRATIONS):
                for statement in statements(MIGRATIONS[version]):
                    conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return version


def statements(script: str) -> list[str]:
    """A script split into single statements (so it can run inside an open transaction)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return [s for s in out if s]
