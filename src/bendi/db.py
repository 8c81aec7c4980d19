"""SQLite for bendi: one way to open a database file, migrate it, and run a transaction.

bendi.db (users, API keys, the audit log, the knowledge-base registry) and every knowledge base's
own file (kb/<name>/kb.sqlite) go through here. Schema changes are numbered migrations:
migrations[i] takes a file from version i to i + 1 (PRAGMA user_version). Append new migrations;
never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

#: SQL (one or more statements) or a function that changes the schema inside the open transaction
Migration = str | Callable[[sqlite3.Connection], None]

#: bendi.db
MIGRATIONS: list[Migration] = [
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

#: the lock a caller guards a shared connection with (threading.Lock or RLock)
Lock = AbstractContextManager[Any]


def open_database(path: Path, migrations: Sequence[Migration], *, timeout: float = 30.0,
                  pragmas: Sequence[str] = (), lock: Lock | None = None) -> sqlite3.Connection:
    """Open (creating it if needed) a SQLite file in WAL mode, apply `pragmas`, then migrate it.

    The connection is in autocommit mode (explicit transactions only) and may be used from any
    thread; callers that share it between threads pass the lock they guard it with.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    for pragma in pragmas:
        conn.execute(f"PRAGMA {pragma}")
    migrate(conn, migrations, lock)
    return conn


def connect(path: Path) -> sqlite3.Connection:
    """Open bendi.db, creating it and applying pending migrations."""
    return open_database(path, MIGRATIONS, pragmas=("foreign_keys=ON",))


@contextmanager
def transaction(conn: sqlite3.Connection, lock: Lock | None = None) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (or left to SQLite on a crash)."""
    with lock if lock is not None else nullcontext():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS,
            lock: Lock | None = None) -> int:
    """Apply migrations past the stored version, each in its own transaction; returns the version."""
    version = _version(conn)
    while version < len(migrations):
        with transaction(conn, lock):
            # another process may have migrated while we waited for the write lock
            version = _version(conn)
            if version < len(migrations):
                step = migrations[version]
                if isinstance(step, str):
                    for statement in statements(step):
                        conn.execute(statement)
                else:
                    step(conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
    return version


def _version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


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

