"""Who asked, from where, through which route: carried from an entry point into the service."""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bendi.auth.principal import Principal


@dataclass(frozen=True)
class RequestContext:
    """The caller of one request, as observers (metrics, audit, quotas) see it."""

    #: the user: "local" (or the login name) on the CLI, the key's owner on the server
    principal: str
    #: the entry point: "POST /v1/chat/completions", "cli run", "cli kb ask", ...
    route: str
    #: the client's address (server only)
    client: str | None = None
    #: which API key authenticated the request (server only; None without authentication)
    api_key_id: str | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: what the caller may do (models, knowledge bases; see bendi.auth); None: no limits (the
    #: person at this machine on the CLI, or a server without accounts on loopback)
    access: Principal | None = None

    @classmethod
    def local(cls, route: str) -> RequestContext:
        """A command run by the person at this machine."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no login name (containers without a passwd entry)
            user = "local"
        return cls(principal=user, route=route)
