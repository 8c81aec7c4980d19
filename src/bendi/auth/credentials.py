"""Secrets: passwords (argon2id), API keys and session tokens (random, stored as SHA-256).

Why two hashes: a password is chosen by a person and may be guessed, so it is stored with a slow,
memory-hard hash (argon2id) that makes each guess against a stolen database expensive. An API key
or a session token is 256 random bits: nobody can guess it, slow or fast, so a fast hash (SHA-256)
loses nothing, and it keeps checking a key per request in microseconds instead of the tens or
hundreds of milliseconds argon2 would cost on every call.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bendi.errors import InvalidRequest

#: OWASP's argon2id profile (19 MiB, 2 passes, 1 lane): about 50 ms on an idle server core
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
#: checked against when the user does not exist, so a wrong name costs as long as a wrong password
_DUMMY = _HASHER.hash("not a password: this hash only wastes the same time as a real check")

MIN_PASSWORD = 8
KEY_PREFIX = "bk"
_KEY = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(f"a password needs at least {MIN_PASSWORD} characters", param="password")
    return _HASHER.hash(password)


def check_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored` (an argon2 hash; None: compared with a dummy, false)."""
    try:
        return bool(_HASHER.verify(stored or _DUMMY, password)) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _HASHER.check_needs_rehash(stored)


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets or digests."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class NewKey:
    """A freshly made API key: `secret` is shown once and never stored."""

    id: str
    secret: str
    hash: str


def new_key() -> NewKey:
    """`bk_<12 hex id>_<43 characters of base64url: 256 random bits>`."""
    key_id = secrets.token_hex(6)
    secret = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(key_id, secret, sha256(secret))


def key_id_of(token: str) -> str | None:
    """The id inside an API key, or None if `token` is not shaped like one of bendi's keys."""
    match = _KEY.match(token)
    return match.group(1) if match else None


def new_token() -> str:
    """A session token or CSRF token: 256 random bits."""
    return secrets.token_urlsafe(32)
