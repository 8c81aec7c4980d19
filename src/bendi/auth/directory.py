"""Users, groups, API keys, knowledge-base grants and quotas in bendi.db, and the cached view of
them (`Snapshot`) that authenticating a request reads from memory.

Every change is an admin action: it is made in one transaction and recorded in the audit log with
who made it (`actor`), never with a password or a key. Every change also bumps `auth_version`
(by triggers in the schema), so a server notices a change made by the CLI in another process with
one cheap query and reloads its snapshot.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bendi import db
from bendi.audit.log import AuditEntry, AuditLog
from bendi.auth.credentials import check_password, hash_password, needs_rehash, new_key
from bendi.auth.principal import DEFAULT_FAMILIES, FAMILIES, ROLES, Principal, Via
from bendi.core.context import RequestContext
from bendi.errors import (
    BendiError,
    Conflict,
    InvalidRequest,
    KnowledgeBaseNotFound,
    NotFound,
    PermissionDenied,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
#: names the server uses for callers that are not users
RESERVED = frozenset({"anonymous", "bootstrap", "local"})
ACCESS = ("read", "write")


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name) or name.lower() in RESERVED:
        raise InvalidRequest(f"invalid {kind} name {name!r}: letters, digits, '.', '_', '-', '@' "
                             f"(and not {', '.join(sorted(RESERVED))})", param="name")
    return name


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    role: str
    disabled: bool
    groups: frozenset[str]


@dataclass(frozen=True)
class KeyInfo:
    id: str
    user: str
    name: str
    hash: str
    models: tuple[str, ...] | None
    knowledge_bases: tuple[str, ...] | None
    routes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    def status(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or time.time()):
            return "expired"
        return "active"


@dataclass(frozen=True)
class Quota:
    requests_per_minute: int | None
    tokens_per_day: int | None


@dataclass(frozen=True)
class Snapshot:
    """Everything authentication and authorisation read, loaded in one go per auth_version."""

    version: int
    users: dict[str, UserInfo] = field(default_factory=dict)
    users_by_id: dict[int, UserInfo] = field(default_factory=dict)
    keys: dict[str, KeyInfo] = field(default_factory=dict)
    readable: dict[str, frozenset[str]] = field(default_factory=dict)
    writable: dict[str, frozenset[str]] = field(default_factory=dict)
    quotas: dict[tuple[str, str], Quota] = field(default_factory=dict)

    @property
    def has_admin(self) -> bool:
        return any(u.role == "admin" and not u.disabled for u in self.users.values())

    def principal(self, user: UserInfo, via: Via, key: KeyInfo | None = None) -> Principal:
        """What `user` may do through this credential."""
        admin = user.role == "admin"
        families = frozenset(FAMILIES if admin else DEFAULT_FAMILIES)
        readable = None if admin else self.readable.get(user.name, frozenset())
        writable = None if admin else self.writable.get(user.name, frozenset())
        models = None
        if key is not None:
            families &= frozenset(key.routes)
            models = key.models
            if key.knowledge_bases is not None:
                scope = frozenset(key.knowledge_bases)
                readable = scope if readable is None else readable & scope
                writable = scope if writable is None else writable & scope
        return Principal(name=user.name, role="admin" if admin else "member", via=via, groups=user.groups,
                         key_id=key.id if key else None, families=families, models=models,
                         readable=readable, writable=writable)


def _list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(json.loads(value))


class Directory:
    """The accounts part of bendi.db."""

    def __init__(self, db_path: Path, audit: AuditLog) -> None:
        self.db_path = db_path
        self.audit = audit
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._snapshot: Snapshot | None = None
        # requests read through their own connection and lock, so they never wait behind an admin
        # change that waits for SQLite's write lock
        self._read_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None

    def db(self) -> sqlite3.Connection:
        with self._lock:
            if self._conn is None:
                self._conn = db.connect(self.db_path)
            return self._conn

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """One query for a request (authentication), on the reading connection."""
        with self._read_lock:
            return self._reading().execute(sql, args).fetchall()

    def _reading(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = db.connect(self.db_path)
        return self._reader

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # -- the cached view -----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The current view; one indexed read when nothing changed since the last call."""
        with self._read_lock:
            conn = self._reading()
            version = int(conn.execute("SELECT version FROM auth_version").fetchone()[0])
            if self._snapshot is None or self._snapshot.version != version:
                conn.execute("BEGIN")  # one consistent view of every table
                try:
                    self._snapshot = self._load(conn, version)
                finally:
                    conn.execute("COMMIT")
            return self._snapshot

    @staticmethod
    def _load(conn: sqlite3.Connection, version: int) -> Snapshot:
        groups_of: dict[int, set[str]] = {}
        for row in conn.execute("SELECT m.user_id, g.name FROM memberships m JOIN groups g ON g.id = m.group_id"):
            groups_of.setdefault(row[0], set()).add(row[1])
        users = {}
        for row in conn.execute("SELECT id, name, role, disabled FROM users"):
            users[row["name"]] = UserInfo(row["id"], row["name"], row["role"], bool(row["disabled"]),
                                          frozenset(groups_of.get(row["id"], ())))
        by_id = {u.id: u for u in users.values()}
        keys = {}
        for row in conn.execute("SELECT * FROM api_keys WHERE revoked_at IS NULL"):
            user = by_id.get(row["user_id"])
            if user is None:
                continue
            keys[row["id"]] = KeyInfo(row["id"], user.name, row["name"], row["hash"], _list(row["models"]),
                                      _list(row["knowledge_bases"]), tuple(json.loads(row["routes"])),
                                      row["created_at"], row["expires_at"], row["revoked_at"])
        readable: dict[str, set[str]] = {}
        writable: dict[str, set[str]] = {}
        group_members: dict[str, list[str]] = {}
        for user in users.values():
            for g in user.groups:
                group_members.setdefault(g, []).append(user.name)
        for row in conn.execute(
                "SELECT k.knowledge_base, u.name AS user, g.name AS grp, k.access FROM kb_grants k "
                "LEFT JOIN users u ON u.id = k.user_id LEFT JOIN groups g ON g.id = k.group_id"):
            names = [row["user"]] if row["user"] else group_members.get(row["grp"], [])
            for name in names:
                readable.setdefault(name, set()).add(row["knowledge_base"])
                if row["access"] in ("write", "owner"):
                    writable.setdefault(name, set()).add(row["knowledge_base"])
        quotas = {(r[0], r[1]): Quota(r[2], r[3]) for r in conn.execute("SELECT * FROM quotas")}
        return Snapshot(version, users, by_id, keys, {k: frozenset(v) for k, v in readable.items()},
                        {k: frozenset(v) for k, v in writable.items()}, quotas)

    # -- admin actions: one transaction, one audit record ---------------------------------------

    @contextlib.contextmanager
    def _action(self, actor: RequestContext, action: str, detail: dict[str, Any]) -> Iterator[sqlite3.Connection]:
        """Run an admin action in a transaction and record it (also when it fails)."""
        try:
            with self._lock, db.transaction(self.db()) as conn:
                yield conn
        except sqlite3.IntegrityError as exc:
            error = Conflict(f"{action}: {_integrity_message(exc)}")
            self._record(actor, action, detail, error)
            raise error from None
        except BendiError as exc:
            self._record(actor, action, detail, exc)
            raise
        self._record(actor, action, detail, None)

    def _record(self, actor: RequestContext, action: str, detail: dict[str, Any], error: BendiError | None) -> None:
        self.audit.add(AuditEntry.of(actor, "admin", "error" if error else "ok", action=action, detail=detail,
                                     code=error.status if error else None,
                                     error=error.message if error else None))

    def _user_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no user {name!r} (bendi user ls lists them)")
        return int(row[0])

    def _group_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM groups WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no group {name!r} (bendi group ls lists them)")
        return int(row[0])

    def _check_admins_left(self, conn: sqlite3.Connection, name: str) -> None:
        """Refuse to leave the server with no enabled admin: on loopback that would turn
        authentication off for everyone."""
        others = conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0 AND name <> ?",
                              (name,)).fetchone()[0]
        mine = conn.execute("SELECT role = 'admin' AND disabled = 0 FROM users WHERE name = ?", (name,)).fetchone()
        if mine is not None and mine[0] and others == 0:
            raise PermissionDenied(f"{name} is the last admin: add another admin first")

    # -- users ---------------------------------------------------------------------------------

    def add_user(self, name: str, *, role: str = "member", password: str | None = None,
                 groups: tuple[str, ...] = (), actor: RequestContext) -> dict[str, Any]:
        check_name("user", name)
        if role not in ROLES:
            raise InvalidRequest(f"unknown role {role!r}: use admin or member", param="role")
        hashed = hash_password(password) if password is not None else None
        with self._action(actor, "user.add", {"user": name, "role": role, "groups": list(groups)}) as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"user {name!r} already exists")
            user_id = conn.execute("INSERT INTO users(name, role, password, created_at) VALUES (?, ?, ?, ?)",
                                   (name, role, hashed, time.time())).lastrowid
            for group in groups:
                conn.execute("INSERT INTO memberships VALUES (?, ?)", (self._group_id(conn, group), user_id))
        return self.user(name)

    def update_user(self, name: str, *, role: str | None = None, password: str | None = None,
                    disabled: bool | None = None, actor: RequestContext) -> dict[str, Any]:
        """Change a user's role, password or whether they may sign in."""
        if role is not None and role not in ROLES:
            raise InvalidRequest(f"unknown role {role!r}: use admin or member", param="role")
        hashed = hash_password(password) if password is not None else None
        detail: dict[str, Any] = {"user": name}
        detail.update({k: v for k, v in (("role", role), ("disabled", disabled)) if v is not None})
        if password is not None:
            detail["password"] = "changed"
        with self._action(actor, "user.update", detail) as conn:
            user_id = self._user_id(conn, name)
            if role == "member" or disabled:
                self._check_admins_left(conn, name)
            if role is not None:
                conn.execute("UPDATE users SET role = ? WHERE id = ?", (role, user_id))
            if hashed is not None:
                conn.execute("UPDATE users SET password = ? WHERE id = ?", (hashed, user_id))
                conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            if disabled is not None:
                conn.execute("UPDATE users SET disabled = ? WHERE id = ?", (int(disabled), user_id))
                if disabled:
                    conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
        return self.user(name)

    def remove_user(self, name: str, *, actor: RequestContext) -> None:
        """Remove a user with their keys, sessions, grants and quotas."""
        with self._action(actor, "user.remove", {"user": name}) as conn:
            user_id = self._user_id(conn, name)
            self._check_admins_left(conn, name)
            keys = [r[0] for r in conn.execute("SELECT id FROM api_keys WHERE user_id = ?", (user_id,))]
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
            conn.execute("DELETE FROM quotas WHERE subject_kind = 'user' AND subject = ?", (name,))
            conn.executemany("DELETE FROM quotas WHERE subject_kind = 'key' AND subject = ?", [(k,) for k in keys])

    def user(self, name: str) -> dict[str, Any]:
        rows = [u for u in self.users() if u["name"] == name]
        if not rows:
            raise NotFound(f"no user {name!r} (bendi user ls lists them)")
        return rows[0]

    def users(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db().execute(
                "SELECT u.*, (SELECT COUNT(*) FROM api_keys k WHERE k.user_id = u.id AND k.revoked_at IS NULL) AS keys "
                "FROM users u ORDER BY u.name").fetchall()
        snap = self.snapshot()
        return [{"name": r["name"], "role": r["role"], "disabled": bool(r["disabled"]),
                 "groups": sorted(snap.users[r["name"]].groups) if r["name"] in snap.users else [],
                 "password": r["password"] is not None, "keys": r["keys"], "created_at": r["created_at"]}
                for r in rows]

    def login(self, name: str, password: str) -> UserInfo | None:
        """The user `name` if `password` is theirs and they may sign in; the same time either way."""
        with self._lock:
            row = self.db().execute("SELECT id, password, disabled FROM users WHERE name = ?", (name,)).fetchone()
        stored = row["password"] if row is not None else None
        ok = check_password(stored, password)  # a missing user is checked against a dummy hash
        if not ok or row is None or row["disabled"]:
            return None
        if stored is not None and needs_rehash(stored):
            with self._lock, db.transaction(self.db()) as conn:
                conn.execute("UPDATE users SET password = ? WHERE id = ?", (hash_password(password), row["id"]))
        return self.snapshot().users_by_id.get(int(row["id"]))

    # -- groups --------------------------------------------------------------------------------

    def add_group(self, name: str, *, actor: RequestContext) -> dict[str, Any]:
        check_name("group", name)
        with self._action(actor, "group.add", {"group": name}) as conn:
            if conn.execute("SELECT 1 FROM groups WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"group {name!r} already exists")
            conn.execute("INSERT INTO groups(name, created_at) VALUES (?, ?)", (name, time.time()))
        return {"name": name, "members": []}

    def remove_group(self, name: str, *, actor: RequestContext) -> None:
        with self._action(actor, "group.remove", {"group": name}) as conn:
            conn.execute("DELETE FROM groups WHERE id = ?", (self._group_id(conn, name),))

    def set_members(self, group: str, users: tuple[str, ...], *, add: bool, actor: RequestContext) -> dict[str, Any]:
        """Add `users` to `group` (add=True) or take them out."""
        action = "group.join" if add else "group.leave"
        with self._action(actor, action, {"group": group, "users": list(users)}) as conn:
            group_id = self._group_id(conn, group)
            for user in users:
                args = (group_id, self._user_id(conn, user))
                if add:
                    conn.execute("INSERT OR IGNORE INTO memberships VALUES (?, ?)", args)
                else:
                    conn.execute("DELETE FROM memberships WHERE group_id = ? AND user_id = ?", args)
        return next(g for g in self.groups() if g["name"] == group)

    def groups(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db().execute("SELECT g.name, g.created_at, u.name AS user FROM groups g LEFT JOIN "
                                     "memberships m ON m.group_id = g.id LEFT JOIN users u ON u.id = m.user_id "
                                     "ORDER BY g.name, u.name").fetchall()
        out: dict[str, dict[str, Any]] = {}
        for r in rows:
            entry = out.setdefault(r["name"], {"name": r["name"], "members": [], "created_at": r["created_at"]})
            if r["user"]:
                entry["members"].append(r["user"])
        return list(out.values())

    # -- API keys ------------------------------------------------------------------------------

    def create_key(self, user: str, *, name: str = "", models: tuple[str, ...] | None = None,
                   knowledge_bases: tuple[str, ...] | None = None, routes: tuple[str, ...] | None = None,
                   expires_in: float | None = None, actor: RequestContext) -> tuple[dict[str, Any], str]:
        """A new key for `user`: (its description, the key itself, to be shown once)."""
        routes = tuple(dict.fromkeys(routes or DEFAULT_FAMILIES))
        unknown = [r for r in routes if r not in FAMILIES]
        if unknown:
            raise InvalidRequest(f"unknown route family {unknown[0]!r}: use {', '.join(FAMILIES)}", param="routes")
        if expires_in is not None and expires_in <= 0:
            raise InvalidRequest("the expiry must be in the future", param="expires")
        made = new_key()
        now = time.time()
        detail = {"key_id": made.id, "user": user, "name": name, "models": models,
                  "knowledge_bases": knowledge_bases, "routes": list(routes),
                  "expires_at": now + expires_in if expires_in else None}
        with self._action(actor, "key.create", detail) as conn:
            user_id = self._user_id(conn, user)
            role = conn.execute("SELECT role FROM users WHERE id = ?", (user_id,)).fetchone()[0]
            if "admin" in routes and role != "admin":
                raise InvalidRequest(f"{user} is not an admin: a key for admin routes needs an admin user",
                                     param="routes")
            conn.execute(
                "INSERT INTO api_keys(id, user_id, name, hash, models, knowledge_bases, routes, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (made.id, user_id, name, made.hash, None if models is None else json.dumps(list(models)),
                 None if knowledge_bases is None else json.dumps(list(knowledge_bases)), json.dumps(list(routes)),
                 now, now + expires_in if expires_in else None))
        return self.key(made.id), made.secret

    def revoke_key(self, key_id: str, *, actor: RequestContext) -> dict[str, Any]:
        key_id = key_id.removeprefix("bk_")
        with self._action(actor, "key.revoke", {"key_id": key_id}) as conn:
            changed = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                   (time.time(), key_id)).rowcount
            if not changed and not conn.execute("SELECT 1 FROM api_keys WHERE id = ?", (key_id,)).fetchone():
                raise NotFound(f"no API key {key_id!r} (bendi key ls lists them)")
        return self.key(key_id)

    def key(self, key_id: str) -> dict[str, Any]:
        rows = self.keys(key_id=key_id.removeprefix("bk_"))
        if not rows:
            raise NotFound(f"no API key {key_id!r} (bendi key ls lists them)")
        return rows[0]

    def keys(self, *, user: str | None = None, key_id: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT k.*, u.name AS user, l.at AS last_used FROM api_keys k JOIN users u ON u.id = k.user_id "
               "LEFT JOIN key_last_used l ON l.key_id = k.id")
        where, args = [], []
        if user is not None:
            where.append("u.name = ?")
            args.append(user)
        if key_id is not None:
            where.append("k.id = ?")
            args.append(key_id)
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY k.created_at"
        with self._lock:
            rows = self.db().execute(sql, args).fetchall()
        now = time.time()
        out = []
        for r in rows:
            info = KeyInfo(r["id"], r["user"], r["name"], "", _list(r["models"]), _list(r["knowledge_bases"]),
                           tuple(json.loads(r["routes"])), r["created_at"], r["expires_at"], r["revoked_at"])
            out.append({"id": info.id, "prefix": f"bk_{info.id}", "user": info.user, "name": info.name,
                        "models": info.models, "knowledge_bases": info.knowledge_bases,
                        "routes": list(info.routes), "created_at": info.created_at,
                        "expires_at": info.expires_at, "revoked_at": info.revoked_at,
                        "last_used": r["last_used"], "status": info.status(now)})
        return out

    # -- knowledge-base grants -----------------------------------------------------------------

    def grant(self, knowledge_base: str, *, user: str | None = None, group: str | None = None,
              access: str = "read", actor: RequestContext) -> dict[str, Any]:
        """Give `user` or `group` read (search, ask) or write (add and remove documents) access."""
        if access not in ACCESS:
            raise InvalidRequest(f"unknown access {access!r}: use read or write", param="access")
        subject = _subject(user, group)
        detail = {"knowledge_base": knowledge_base, **subject, "access": access}
        with self._action(actor, "grant.add", detail) as conn:
            self._check_kb(conn, knowledge_base)
            if user is not None:
                uid = self._user_id(conn, user)
                conn.execute("DELETE FROM kb_grants WHERE knowledge_base = ? AND user_id = ?", (knowledge_base, uid))
                conn.execute("INSERT INTO kb_grants(knowledge_base, user_id, access) VALUES (?, ?, ?)",
                             (knowledge_base, uid, access))
            else:
                gid = self._group_id(conn, str(group))
                conn.execute("DELETE FROM kb_grants WHERE knowledge_base = ? AND group_id = ? AND access <> 'owner'",
                             (knowledge_base, gid))
                conn.execute("INSERT INTO kb_grants(knowledge_base, group_id, access) VALUES (?, ?, ?)",
                             (knowledge_base, gid, access))
        return detail

    def revoke_grant(self, knowledge_base: str, *, user: str | None = None, group: str | None = None,
                     actor: RequestContext) -> None:
        subject = _subject(user, group)
        with self._action(actor, "grant.remove", {"knowledge_base": knowledge_base, **subject}) as conn:
            if user is not None:
                n = conn.execute("DELETE FROM kb_grants WHERE knowledge_base = ? AND user_id = ?",
                                 (knowledge_base, self._user_id(conn, user))).rowcount
            else:
                n = conn.execute("DELETE FROM kb_grants WHERE knowledge_base = ? AND group_id = ? AND access <> 'owner'",
                                 (knowledge_base, self._group_id(conn, str(group)))).rowcount
            if not n:
                raise NotFound(f"no grant on {knowledge_base!r} for {user or group!r}")

    def set_owner(self, knowledge_base: str, group: str | None, *, actor: RequestContext) -> None:
        """The group a knowledge base belongs to (its members may read and write it); None: none."""
        with self._action(actor, "grant.owner", {"knowledge_base": knowledge_base, "group": group}) as conn:
            self._check_kb(conn, knowledge_base)
            conn.execute("DELETE FROM kb_grants WHERE knowledge_base = ? AND access = 'owner'", (knowledge_base,))
            if group is not None:
                conn.execute("INSERT INTO kb_grants(knowledge_base, group_id, access) VALUES (?, ?, 'owner')",
                             (knowledge_base, self._group_id(conn, group)))

    @staticmethod
    def _check_kb(conn: sqlite3.Connection, name: str) -> None:
        if not conn.execute("SELECT 1 FROM knowledge_bases WHERE name = ?", (name,)).fetchone():
            raise KnowledgeBaseNotFound(f"knowledge base {name!r} not found (bendi kb ls lists them)")

    def grants(self, knowledge_base: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT k.id, k.knowledge_base, u.name AS user, g.name AS grp, k.access FROM kb_grants k "
               "LEFT JOIN users u ON u.id = k.user_id LEFT JOIN groups g ON g.id = k.group_id")
        args: tuple[Any, ...] = ()
        if knowledge_base is not None:
            sql, args = sql + " WHERE k.knowledge_base = ?", (knowledge_base,)
        with self._lock:
            rows = self.db().execute(sql + " ORDER BY k.knowledge_base, k.access, u.name, g.name", args).fetchall()
        return [{"id": r["id"], "knowledge_base": r["knowledge_base"], "user": r["user"], "group": r["grp"],
                 "access": r["access"]} for r in rows]

    # -- quotas --------------------------------------------------------------------------------

    def set_quota(self, *, user: str | None = None, key: str | None = None, requests_per_minute: int | None = None,
                  tokens_per_day: int | None = None, actor: RequestContext) -> dict[str, Any]:
        kind, subject = ("user", user) if user is not None else ("key", (key or "").removeprefix("bk_"))
        if (user is None) == (key is None):
            raise InvalidRequest("name either a user or a key", param="user")
        for value, param in ((requests_per_minute, "requests_per_minute"), (tokens_per_day, "tokens_per_day")):
            if value is not None and value < 0:
                raise InvalidRequest(f"{param} cannot be negative", param=param)
        detail = {kind: subject, "requests_per_minute": requests_per_minute, "tokens_per_day": tokens_per_day}
        with self._action(actor, "quota.set", detail) as conn:
            if kind == "user":
                self._user_id(conn, subject)
            elif not conn.execute("SELECT 1 FROM api_keys WHERE id = ?", (subject,)).fetchone():
                raise NotFound(f"no API key {subject!r} (bendi key ls lists them)")
            conn.execute("INSERT OR REPLACE INTO quotas VALUES (?, ?, ?, ?)",
                         (kind, subject, requests_per_minute, tokens_per_day))
        return {"kind": kind, "subject": subject, "requests_per_minute": requests_per_minute,
                "tokens_per_day": tokens_per_day}

    def remove_quota(self, *, user: str | None = None, key: str | None = None, actor: RequestContext) -> None:
        kind, subject = ("user", user) if user is not None else ("key", (key or "").removeprefix("bk_"))
        with self._action(actor, "quota.remove", {kind: subject}) as conn:
            if not conn.execute("DELETE FROM quotas WHERE subject_kind = ? AND subject = ?", (kind, subject)).rowcount:
                raise NotFound(f"no quota for {kind} {subject!r}")

    def quotas(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db().execute("SELECT * FROM quotas ORDER BY subject_kind DESC, subject").fetchall()
        return [{"kind": r[0], "subject": r[1], "requests_per_minute": r[2], "tokens_per_day": r[3]} for r in rows]


def _subject(user: str | None, group: str | None) -> dict[str, str]:
    if (user is None) == (group is None):
        raise InvalidRequest("name either a user or a group", param="user")
    return {"user": user} if user is not None else {"group": str(group)}


def _integrity_message(exc: sqlite3.IntegrityError) -> str:
    text = str(exc)
    if "FOREIGN KEY" in text:
        return "it refers to something that does not exist"
    if "UNIQUE" in text:
        return "it already exists"
    return text
