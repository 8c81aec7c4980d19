"""What a web page the user visits can make the browser send to this server, and what is refused.

A browser runs any page's scripts and forms against any address, loopback included. Two rules,
checked on every route before anything else runs (pure ASGI: no route can skip them):

1. **Host allow-list (DNS rebinding).** A page on `evil.example` whose name the attacker then
   re-points at 127.0.0.1 talks to this server as if it were its own origin, reading answers too.
   Its requests carry `Host: evil.example`, so a server bound to loopback answers only loopback
   names (`localhost`, `*.localhost`, 127.0.0.0/8, ::1), the address it is bound to, and the names
   in `BENDI_ALLOWED_HOSTS`. A server bound to all interfaces needs a credential (see check_bind)
   and answers any name unless the setting lists them.
2. **Origin on state-changing requests.** Without reading the answer, a page can still send a
   POST or DELETE (a form, a `fetch` in no-cors mode). Browsers add an `Origin` header to those;
   one that is not this server's own origin, a loopback origin, a desktop-app scheme (as Ollama
   allows: app://, file://, tauri://, vscode-webview://, vscode-file://) or an origin listed in
   `BENDI_CORS_ORIGINS` is refused. Without an `Origin`, `Sec-Fetch-Site: cross-site` is refused
   too. Clients that are not browsers (SDKs, curl) send neither and are not affected.

The third rule, request bodies, is the toolkit's: JSON routes refuse bodies a form can forge
(text/plain, multipart) with 415 (server/body.py), the upload route accepts only multipart.
These rules run before the access middleware (server/access.py), whose login cookie relies on them
besides its own SameSite and CSRF checks; `SiteRules.refusal` can be called on its own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from bendi.config import Settings
from bendi.errors import BendiError, CrossSiteRefused
from bendi.server.errors import send_error

#: methods that change something; the Origin rule applies to these
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: origins desktop clients' webviews send (Electron, Tauri, VS Code)
APP_SCHEMES = frozenset({"app", "file", "tauri", "vscode-webview", "vscode-file"})


def split_list(setting: str | None) -> list[str]:
    """A comma-separated setting as a list (empty entries dropped)."""
    return [item.strip() for item in (setting or "").split(",") if item.strip()]


def host_name(host: str) -> str:
    """The name in a Host header or URL authority: no port, no brackets, lower case, no trailing dot
    (`localhost.` is the same name)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def is_loopback_name(name: str) -> bool:
    """localhost, a name under .localhost (RFC 6761: always loopback), or a loopback address."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SiteRules:
    """Which Host names and Origins the server accepts. Build it with `from_settings`."""

    #: extra names a Host may carry; None: any name
    hosts: frozenset[str] | None
    #: extra origins (scheme://host[:port]) allowed to change things; "*" allows any
    origins: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> SiteRules:
        names = {host_name(h) for h in split_list(settings.allowed_hosts)}
        bound = host_name(settings.host)
        wildcard_bind = bound in ("", "0.0.0.0", "::")
        hosts: frozenset[str] | None
        if "*" in names or (wildcard_bind and not names):
            hosts = None
        else:
            hosts = frozenset(names | ({bound} if not wildcard_bind else set()))
        origins = frozenset(o.rstrip("/").lower() for o in split_list(settings.cors_origins))
        return cls(hosts, origins)

    def host_allowed(self, host: str | None) -> bool:
        if self.hosts is None or not host:  # no Host: HTTP/1.0, never a browser
            return True
        name = host_name(host)
        return is_loopback_name(name) or name in self.hosts

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if "*" in self.origins or origin in self.origins:
            return True
        if origin == "null":  # sandboxed frames and local files: anyone can make one
            return False
        parts = urlsplit(origin)
        if parts.scheme in APP_SCHEMES:
            return True
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        if host and parts.netloc == host.strip().lower():
            return True  # this server's own pages (the web console)
        return is_loopback_name(host_name(parts.netloc))

    def refusal(self, method: str, headers: dict[str, str]) -> BendiError | None:
        """Why this request is refused (a CrossSiteRefused), or None. `headers` have lower-case names."""
        host = headers.get("host")
        if not self.host_allowed(host):
            return CrossSiteRefused(
                f"this server does not answer to the name {host_name(host or '')!r}; a web page may be "
                "trying to reach it through DNS rebinding. To serve that name, add it to "
                "BENDI_ALLOWED_HOSTS.")
        if method.upper() not in STATE_CHANGING:
            return None
        origin = headers.get("origin")
        if origin is not None:
            if not self.origin_allowed(origin, host):
                return CrossSiteRefused(
                    f"requests from the web page at {origin!r} may not change anything here; to allow "
                    "that origin, add it to BENDI_CORS_ORIGINS.")
        elif headers.get("sec-fetch-site", "").lower() == "cross-site":
            return CrossSiteRefused("a cross-site request from a web page may not change anything here")
        return None


class CrossSiteGuard:
    """ASGI middleware applying `SiteRules` to every HTTP request and WebSocket handshake."""

    def __init__(self, app: ASGIApp, rules: SiteRules) -> None:
        self.app = app
        self.rules = rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        # a WebSocket handshake is a GET, but browsers do not keep other origins out of it
        method = "POST" if scope["type"] == "websocket" else scope.get("method", "GET")
        refused = self.rules.refusal(method, headers)
        if refused is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await send_error(send, scope.get("path", ""), refused)

