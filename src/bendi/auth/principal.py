"""Who is asking and what they may do: the `Principal` an entry point hands the generation service
(in `RequestContext.access`) and the server's access rules consult. Pure data and decisions; no
database, no web framework."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "member"]
ROLES: tuple[Role, ...] = ("admin", "member")

#: route families an API key can be scoped to (docs/security.md lists the routes of each)
FAMILIES = ("chat", "embeddings", "kb", "admin")
#: what `bendi key create` gives when --routes is not set: everything but administration
DEFAULT_FAMILIES = ("chat", "embeddings", "kb")

#: how the caller proved who they are
Via = Literal["key", "session", "bootstrap"]


def model_allowed(patterns: Iterable[str], model: str) -> bool:
    """Whether `model` (a full name, "name:tag") matches one of `patterns`: a full name, a name
    without a tag (any tag), or a shell-style pattern ("deepseek-r1:*")."""
    model = model.lower()
    for pattern in patterns:
        p = pattern.lower()
        if p == model or fnmatch.fnmatchcase(model, p) or (":" not in p and model.split(":", 1)[0] == p):
            return True
    return False


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user, through an API key, a login session or the bootstrap key."""

    name: str
    role: Role
    via: Via
    groups: frozenset[str] = frozenset()
    key_id: str | None = None
    #: route families this credential may use
    families: frozenset[str] = frozenset(FAMILIES)
    #: model patterns the credential may run; None: any model
    models: tuple[str, ...] | None = None
    #: knowledge bases the caller may read / write; None: every one
    readable: frozenset[str] | None = None
    writable: frozenset[str] | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and "admin" in self.families

    def allows(self, family: str) -> bool:
        """Whether this credential may use routes of `family` (admin routes also need the role)."""
        if family == "admin":
            return self.is_admin
        return family in self.families

    def allows_model(self, model: str) -> bool:
        return self.models is None or model_allowed(self.models, model)

    def can_read(self, knowledge_base: str) -> bool:
        return "kb" in self.families and (self.readable is None or knowledge_base in self.readable)

    def can_write(self, knowledge_base: str) -> bool:
        return "kb" in self.families and (self.writable is None or knowledge_base in self.writable)

    def visible(self, knowledge_bases: Iterable[str]) -> list[str]:
        """The knowledge bases among `knowledge_bases` this caller may see (read)."""
        return [n for n in knowledge_bases if self.can_read(n)]
