"""AuthService: who is asking (API keys, the bootstrap key, login sessions), whether credentials
are required at all, logins with their rate limit, and the admission check the generation service
runs for every request (models a key may use, knowledge bases a caller may read).

No web framework here: the server's access middleware (bendi.server.access) calls these.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from bendi import db
from bendi.audit.log import AuditEntry, AuditLog
from bendi.audit.writer import BackgroundWriter
from bendi.auth.credentials import key_id_of, new_token, same, sha256
from bendi.auth.directory import Directory, Snapshot
from bendi.auth.principal import FAMILIES, Principal
from bendi.auth.quotas import Quotas
from bendi.core.context import RequestContext
from bendi.core.observe import Admission, GenerationRecord
from bendi.errors import AuthenticationError, KnowledgeBaseNotFound, PermissionDenied, RateLimited

#: how long a browser login lasts
SESSION_SECONDS = 12 * 3600
#: failed logins allowed per user name, and per client address, within LOGIN_WINDOW seconds
LOGIN_FAILURES_PER_USER = 5
LOGIN_FAILURES_PER_CLIENT = 20
LOGIN_WINDOW = 300.0
#: an API key's last use is written at most this often (seconds)
LAST_USED_EVERY = 1.0

BOOTSTRAP = Principal(name="bootstrap", role="admin", via="bootstrap", key_id="bootstrap",
                      families=frozenset(FAMILIES))
_DUMMY_DIGEST = sha256("no such key")


def kb_not_found(name: str) -> KnowledgeBaseNotFound:
    """Exactly what the registry says for a knowledge base that does not exist: one the caller
    may not read must be indistinguishable from one that is not there."""
    return KnowledgeBaseNotFound(f"knowledge base {name!r} not found (bendi kb ls lists them)")


@dataclass(frozen=True)
class Session:
    principal: Principal
    #: the token state-changing requests must send back in X-CSRF-Token
    csrf: str
    expires_at: float


class LoginThrottle:
    """Failed logins per user name and per client address in a sliding window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        window = self._failures.setdefault(key, deque())
        while window and window[0] <= now - LOGIN_WINDOW:
            window.popleft()
        return window

    def check(self, name: str, client: str | None) -> None:
        now = time.time()
        with self._lock:
            for key, limit in ((f"user:{name}", LOGIN_FAILURES_PER_USER),
                               (f"client:{client}", LOGIN_FAILURES_PER_CLIENT)):
                window = self._recent(key, now)
                if len(window) >= limit:
                    wait = window[0] + LOGIN_WINDOW - now
                    raise RateLimited(f"too many failed logins; try again in {wait:.0f} s", retry_after=wait)

    def failed(self, name: str, client: str | None) -> None:
        now = time.time()
        with self._lock:
            for key in (f"user:{name}", f"client:{client}"):
                self._recent(key, now).append(now)

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{name}", None)


class AccessCheck:
    """The generation service's admission check: the credential's models and knowledge bases."""

    wants_text = False

    def admit(self, admission: Admission) -> None:
        who = admission.context.access
        if who is None:
            return
        if admission.knowledge_base is not None and not who.can_read(admission.knowledge_base):
            raise kb_not_found(admission.knowledge_base)
        family = "embeddings" if admission.kind == "embedding" else "kb" if admission.knowledge_base else "chat"
        if not who.allows(family):
            raise PermissionDenied(f"this credential may not use {family} routes")
        if admission.model is not None and not who.allows_model(admission.model):
            raise PermissionDenied(f"this credential may not use model {admission.model}", param="model")

    def record(self, record: GenerationRecord) -> None:
        return None


class AuthService:
    """Accounts, credentials and quotas over bendi.db."""

    def __init__(self, db_path: Path, audit: AuditLog, writer: BackgroundWriter, *,
                 bootstrap_key: str | None = None) -> None:
        self.db_path = db_path
        self.audit = audit
        self.writer = writer
        self.bootstrap_key = bootstrap_key
        self.directory = Directory(db_path, audit)
        self.quotas = Quotas(db_path, writer, self.snapshot)
        self.access = AccessCheck()
        self.throttle = LoginThrottle()
        self._touched: dict[str, float] = {}
        writer.handle("key_used", _write_last_used)

    def snapshot(self) -> Snapshot:
        return self.directory.snapshot()

    def has_admin(self) -> bool:
        return self.snapshot().has_admin

    def required(self, loopback: bool) -> bool:
        """Whether every request must carry a credential: with the bootstrap key, once an admin
        exists, or whenever the server is reachable beyond this machine."""
        return bool(self.bootstrap_key) or not loopback or self.snapshot().has_admin

    # -- API keys ------------------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal:
        """The principal an API key (or the bootstrap key) stands for; AuthenticationError if
        none. Every comparison of a secret is constant-time."""
        if self.bootstrap_key and same(token, self.bootstrap_key):
            return BOOTSTRAP
        snap = self.snapshot()
        key_id = key_id_of(token)
        info = snap.keys.get(key_id) if key_id is not None else None
        digest = sha256(token)
        if info is None:
            same(digest, _DUMMY_DIGEST)  # the same work as a wrong key
            raise AuthenticationError("invalid API key")
        if not same(digest, info.hash):
            raise AuthenticationError("invalid API key")
        if info.status() == "expired":
            raise AuthenticationError(f"API key bk_{info.id} has expired")
        user = snap.users.get(info.user)
        if user is None or user.disabled:
            raise AuthenticationError(f"the user of API key bk_{info.id} is disabled")
        self._touch(info.id)
        return snap.principal(user, "key", info)

    def _touch(self, key_id: str) -> None:
        now = time.time()
        if now - self._touched.get(key_id, 0.0) >= LAST_USED_EVERY:
            self._touched[key_id] = now
            self.writer.submit("key_used", (key_id, now))

    # -- login sessions ------------------------------------------------------------------------

    def login(self, name: str, password: str, context: RequestContext) -> tuple[str, Session]:
        """Check a user's password and open a session: (the cookie's value, the session).
        Failures are rate-limited per user name and per client address, and audited."""
        self.throttle.check(name, context.client)
        user = self.directory.login(name, password)
        if user is None:
            self.throttle.failed(name, context.client)
            self.audit.add(AuditEntry.of(context, "auth", "refused", action="login", code=401,
                                         error="wrong user name or password", detail={"user": name}))
            raise AuthenticationError("wrong user name or password")
        self.throttle.succeeded(name)
        token, csrf = new_token(), new_token()
        expires = time.time() + SESSION_SECONDS
        with self.directory._lock, db.transaction(self.directory.db()) as conn:
            conn.execute("DELETE FROM sessions WHERE expires_at < ?", (time.time(),))
            conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                         (sha256(token), user.id, csrf, time.time(), expires))
        principal = self.snapshot().principal(user, "session")
        self.audit.add(AuditEntry(kind="auth", route=context.route, status="ok", action="login", user=user.name,
                                  client=context.client, request_id=context.request_id))
        return token, Session(principal, csrf, expires)

    def session(self, token: str) -> Session | None:
        """The live session a cookie's value opens, or None."""
        rows = self.directory.read("SELECT user_id, csrf, expires_at FROM sessions WHERE token_hash = ?",
                                   (sha256(token),))
        row = rows[0] if rows else None
        if row is None or row["expires_at"] <= time.time():
            return None
        snap = self.snapshot()
        user = snap.users_by_id.get(int(row["user_id"]))
        if user is None or user.disabled:
            return None
        return Session(snap.principal(user, "session"), row["csrf"], row["expires_at"])

    def logout(self, token: str, context: RequestContext) -> None:
        with self.directory._lock, db.transaction(self.directory.db()) as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (sha256(token),))
        self.audit.add(AuditEntry.of(context, "auth", "ok", action="logout"))

    def close(self) -> None:
        self.quotas.close()
        self.directory.close()


def _write_last_used(conn: sqlite3.Connection, uses: list[tuple[str, float]]) -> None:
    latest: dict[str, float] = {}
    for key_id, at in uses:
        latest[key_id] = max(at, latest.get(key_id, 0.0))
    # a key removed since it was used is skipped (its row would break the foreign key)
    conn.executemany("INSERT INTO key_last_used SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1) "
                     "ON CONFLICT(key_id) DO UPDATE SET at = MAX(at, excluded.at)", list(latest.items()))
