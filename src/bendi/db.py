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
    # 2: accounts, API keys, knowledge-base grants, quotas, usage, login sessions (bendi.auth)
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'member')),
        password TEXT,                   -- argon2id hash; NULL: no password login (keys only)
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE groups (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE memberships (
        group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        PRIMARY KEY (group_id, user_id)
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,             -- the visible part of the key: bk_<id>_<secret>
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name TEXT NOT NULL DEFAULT '',
        hash TEXT NOT NULL,              -- SHA-256 of the whole key (never the key itself)
        models TEXT,                     -- JSON list of model patterns; NULL: any model
        knowledge_bases TEXT,            -- JSON list; NULL: every knowledge base the user may read
        routes TEXT NOT NULL,            -- JSON list of route families
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL
    );
    -- kept apart from api_keys so that recording use does not look like a change of keys
    CREATE TABLE key_last_used (
        key_id TEXT PRIMARY KEY REFERENCES api_keys(id) ON DELETE CASCADE,
        at REAL NOT NULL
    );
    CREATE TABLE kb_grants (
        id INTEGER PRIMARY KEY,
        knowledge_base TEXT NOT NULL REFERENCES knowledge_bases(name) ON DELETE CASCADE,
        user_id INTEGER REFERENCES users(id) ON DELETE CASCADE,
        group_id INTEGER REFERENCES groups(id) ON DELETE CASCADE,
        access TEXT NOT NULL CHECK (access IN ('read', 'write', 'owner')),
        CHECK ((user_id IS NULL) <> (group_id IS NULL)),
        CHECK (access <> 'owner' OR group_id IS NOT NULL)
    );
    CREATE UNIQUE INDEX kb_grants_user ON kb_grants(knowledge_base, user_id) WHERE user_id IS NOT NULL;
    CREATE UNIQUE INDEX kb_grants_group ON kb_grants(knowledge_base, group_id)
        WHERE group_id IS NOT NULL AND access <> 'owner';
    CREATE UNIQUE INDEX kb_grants_owner ON kb_grants(knowledge_base) WHERE access = 'owner';
    CREATE TABLE quotas (
        subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'key')),
        subject TEXT NOT NULL,           -- a user name or an API key id
        requests_per_minute INTEGER,
        tokens_per_day INTEGER,
        PRIMARY KEY (subject_kind, subject)
    );
    CREATE TABLE usage (
        day TEXT NOT NULL,               -- UTC date, YYYY-MM-DD
        user TEXT NOT NULL,
        key_id TEXT NOT NULL DEFAULT '', -- '' when no API key was used
        requests INTEGER NOT NULL DEFAULT 0,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, user, key_id)
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,     -- SHA-256 of the cookie's value
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    -- bumped by every change of who may do what, so servers reload their cached view cheaply
    CREATE TABLE auth_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL);
    INSERT INTO auth_version VALUES (1, 0);
    CREATE TRIGGER users_i AFTER INSERT ON users BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER users_u AFTER UPDATE ON users BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER users_d AFTER DELETE ON users BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER groups_i AFTER INSERT ON groups BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER groups_d AFTER DELETE ON groups BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER memberships_i AFTER INSERT ON memberships BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER memberships_d AFTER DELETE ON memberships BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER api_keys_i AFTER INSERT ON api_keys BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER api_keys_u AFTER UPDATE ON api_keys BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER api_keys_d AFTER DELETE ON api_keys BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER kb_grants_i AFTER INSERT ON kb_grants BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER kb_grants_u AFTER UPDATE ON kb_grants BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER kb_grants_d AFTER DELETE ON kb_grants BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER quotas_i AFTER INSERT ON quotas BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER quotas_u AFTER UPDATE ON quotas BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER quotas_d AFTER DELETE ON quotas BEGIN UPDATE auth_version SET version = version + 1; END;
    CREATE TRIGGER kbs_d AFTER DELETE ON knowledge_bases BEGIN UPDATE auth_version SET version = version + 1; END;
    """,
    # 3: the hash-chained audit log (bendi.audit)
    """
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,             -- microseconds since the epoch (UTC)
        kind TEXT NOT NULL,              -- chat, completion, embedding, http, admin, auth
        route TEXT NOT NULL,             -- the entry point: "POST /v1/chat/completions", "cli run"
        action TEXT,                     -- admin and auth records: "user.add", "login", ...
        user TEXT,
        key_id TEXT,
        client TEXT,
        model TEXT,
        knowledge_base TEXT,
        documents TEXT NOT NULL,         -- JSON list of the documents an answer cited
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        status TEXT NOT NULL,            -- ok, error, cancelled, refused
        code INTEGER,                    -- the HTTP status (or the error's) when there is one
        error TEXT,
        latency_us INTEGER NOT NULL,
        request_id TEXT,
        detail TEXT NOT NULL,            -- JSON object: what an admin action changed, ...
        prompt TEXT,                     -- only while an admin has turned text recording on
        answer TEXT,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_ts ON audit(ts);
    CREATE INDEX audit_user ON audit(user, ts);
    -- the chain's head and base (after pruning), each with a MAC under BENDI_HOME/audit.key
    CREATE TABLE audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 4: the web console's chat history, per user (bendi/conversations.py)
    """
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,             -- the user's name ('anonymous' in single-user mode)
        title TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',  -- a model name or kb:<name>
        settings TEXT NOT NULL DEFAULT '{}',  -- JSON: system prompt, temperature, ...
        messages TEXT NOT NULL DEFAULT '[]',  -- JSON list of {role, content, ...}
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX conversations_owner ON conversations(owner, updated_at DESC);
    """,
    # 5: conversations saved from `bendi run` (/save, /load)
    """
    CREATE TABLE chats (
        name TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        system TEXT,
        options TEXT NOT NULL DEFAULT '{}',  -- JSON: sampling options set in the session
        messages TEXT NOT NULL,              -- JSON: [{"role", "content"}, ...]
        updated_at REAL NOT NULL
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

