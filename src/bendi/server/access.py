"""Who may call which route: one rule per route, and the ASGI middleware that applies them.

Every route of the app has a rule in `RULES` (tests/test_routes_matrix.py fails for a route that
has none; at run time a route without one is treated as an admin route). A rule names the route
family an API key must be scoped to, whether the `{name}` in the path is a knowledge base the
caller must be able to read or write, and whether this middleware records the request in the audit
log (routes that reach a knowledge base or change models outside the generation service; the
generation service records its own requests, so nothing is recorded twice).

The middleware runs before the app reads a body: it finds the route, authenticates the caller
(`Authorization: Bearer`, `x-api-key`, or the login cookie), refuses what the rule does not allow
(401, 403, or 404 for a knowledge base the caller may not read: it must look like one that does
not exist), checks the CSRF token of cookie-authenticated requests that change something, and puts
the caller in the request's state for `server/http.caller`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bendi.audit.log import AuditEntry
from bendi.auth.credentials import same
from bendi.auth.principal import Principal
from bendi.auth.service import AuthService, kb_not_found
from bendi.core.context import RequestContext
from bendi.errors import AuthenticationError, BendiError, PermissionDenied
from bendi.server.errors import error_body, error_headers

SESSION_COOKIE = "bendi_session"
CSRF_HEADER = "x-csrf-token"
#: methods that change nothing (a cookie-authenticated request of another method needs the CSRF token)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Rule:
    #: "open" (no credential), "any" (any credential), or a route family: chat, embeddings, kb, admin
    family: str
    #: the path's {name} is a knowledge base the caller must be able to "read" or "write"
    kb: str | None = None
    #: recorded in the audit log by this middleware
    audit: bool = False


OPEN, ANY = Rule("open"), Rule("any")
CHAT, EMBEDDINGS = Rule("chat"), Rule("embeddings")
ADMIN, ADMIN_AUDITED = Rule("admin"), Rule("admin", audit=True)
KB_READ, KB_READ_AUDITED = Rule("kb", kb="read"), Rule("kb", kb="read", audit=True)
KB_WRITE_AUDITED = Rule("kb", kb="write", audit=True)

RULES: dict[tuple[str, str], Rule] = {
    ("GET", "/health"): OPEN,
    ("GET", "/"): OPEN,
    ("HEAD", "/"): OPEN,
    ("GET", "/ui"): OPEN,
    ("GET", "/openapi.json"): ANY,
    ("GET", "/docs"): ANY,
    ("GET", "/docs/oauth2-redirect"): ANY,
    ("GET", "/metrics"): ADMIN,
    # login for browsers (server/session_routes.py)
    ("POST", "/auth/login"): OPEN,
    ("GET", "/auth/session"): OPEN,
    ("POST", "/auth/logout"): ANY,
    # OpenAI dialect
    ("POST", "/v1/chat/completions"): CHAT,
    ("POST", "/v1/completions"): CHAT,
    ("POST", "/v1/responses"): CHAT,
    ("POST", "/v1/embeddings"): EMBEDDINGS,
    ("GET", "/v1/models"): ANY,
    ("GET", "/v1/models/{model:path}"): ANY,
    # Ollama dialect
    ("POST", "/api/chat"): CHAT,
    ("POST", "/api/generate"): CHAT,
    ("POST", "/api/embed"): EMBEDDINGS,
    ("POST", "/api/embeddings"): EMBEDDINGS,
    ("GET", "/api/tags"): ANY,
    ("POST", "/api/show"): ANY,
    ("GET", "/api/ps"): ANY,
    ("GET", "/api/version"): ANY,
    ("DELETE", "/api/delete"): ADMIN_AUDITED,
    ("POST", "/api/copy"): ADMIN_AUDITED,
    ("POST", "/api/create"): ADMIN_AUDITED,
    ("POST", "/api/pull"): ADMIN_AUDITED,
    # knowledge bases (an answer is recorded by the generation service)
    ("POST", "/kb"): ADMIN_AUDITED,
    ("GET", "/kb"): Rule("kb"),
    ("GET", "/kb/{name}"): KB_READ,
    ("DELETE", "/kb/{name}"): Rule("admin", kb="read", audit=True),
    ("POST", "/kb/{name}/documents"): KB_WRITE_AUDITED,
    ("GET", "/kb/{name}/documents"): KB_READ_AUDITED,
    ("DELETE", "/kb/{name}/documents/{document:path}"): KB_WRITE_AUDITED,
    ("POST", "/kb/{name}/search"): KB_READ_AUDITED,
    ("POST", "/kb/{name}/ask"): KB_READ,
    # the web console (server/console_routes.py): its files hold nothing secret; each caller's
    # conversations are their own; importing a file from the server's disk is an admin's
    ("GET", "/console/{name:path}"): OPEN,
    ("GET", "/conversations"): ANY,
    ("POST", "/conversations"): ANY,
    ("DELETE", "/conversations"): ANY,
    ("GET", "/conversations/{conversation_id}"): ANY,
    ("PATCH", "/conversations/{conversation_id}"): ANY,
    ("DELETE", "/conversations/{conversation_id}"): ANY,
    ("GET", "/models"): ANY,
    ("POST", "/models/import"): ADMIN_AUDITED,
}


def rule_for(method: str, path: str) -> Rule | None:
    """The rule of route `path` (its template) for `method`; HEAD follows GET."""
    rule = RULES.get((method, path))
    if rule is None and method == "HEAD":
        rule = RULES.get(("GET", path))
    if rule is None and path.startswith("/admin/"):
        rule = ADMIN
    return rule


# -- the app's route table ----------------------------------------------------------------------

@dataclass(frozen=True)
class RouteEntry:
    path: str
    methods: frozenset[str]
    regex: re.Pattern[str]
    convertors: dict[str, Any]


def route_table(app: Any) -> list[RouteEntry]:
    """Every route of a FastAPI/Starlette app, flattened, in matching order."""
    out: list[RouteEntry] = []

    def add(route: Any) -> None:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:  # FastAPI's included router
            for ctx in contexts():
                add(ctx)
            return
        regex = getattr(route, "path_regex", None)
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        if regex is None or path is None:
            return
        out.append(RouteEntry(str(getattr(route, "path", path)), frozenset(getattr(route, "methods", None) or ()),
                              regex, dict(getattr(route, "param_convertors", {}) or {})))

    for route in app.router.routes:
        add(route)
    return out


def match(table: list[RouteEntry], method: str, path: str) -> tuple[RouteEntry, dict[str, Any]] | None:
    """The route a request goes to and its path parameters; None when no route has that path and
    method (the app answers 404 or 405)."""
    for entry in table:
        found = entry.regex.match(path)
        if found is None:
            continue
        if entry.methods and method not in entry.methods and not (method == "HEAD" and "GET" in entry.methods):
            continue
        params = {k: entry.convertors[k].convert(v) if k in entry.convertors else v
                  for k, v in found.groupdict().items()}
        return entry, params
    return None


# -- the middleware ---------------------------------------------------------------------------

class AccessGuard:
    """Authentication and authorisation for every request, before the app reads its body."""

    def __init__(self, app: ASGIApp, auth: AuthService, loopback: bool) -> None:
        self.app = app
        self.auth = auth
        self.loopback = loopback
        self._table: list[RouteEntry] | None = None

    def _routes(self, scope: Scope) -> list[RouteEntry]:
        if self._table is None:
            self._table = route_table(scope["app"])
        return self._table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method, path = scope["method"], scope.get("path", "")
        found = match(self._routes(scope), method, path)
        template = found[0].path if found else None
        params = found[1] if found else {}
        rule = (rule_for(method, template) or ADMIN) if template is not None else None
        client = scope.get("client")
        context = RequestContext(principal="anonymous", route=f"{method} {template or path}",
                                 client=client[0] if client else None)
        try:
            principal = self._authenticate(scope, method, rule)
        except BendiError as exc:
            await self._refuse(send, path, exc, context, rule, params, started)
            return
        if principal is not None:
            state = scope.setdefault("state", {})
            state["principal"], state["api_key_id"], state["access"] = principal.name, principal.key_id, principal
            context = RequestContext(principal=principal.name, route=context.route, client=context.client,
                                     api_key_id=principal.key_id, access=principal,
                                     request_id=context.request_id)
        if rule is not None and rule.family not in ("open", "any") and principal is not None:
            try:
                self._authorise(principal, rule, params)
                if rule.audit and rule.family == "kb":
                    self.auth.quotas.check(context)
            except BendiError as exc:
                await self._refuse(send, path, exc, context, rule, params, started)
                return
        if rule is None or not rule.audit:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def watching(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            code = status[0] if status else 500
            if rule.family == "kb":
                self.auth.quotas.charge(context, 0, 0)
            self.auth.audit.add(self._entry(context, rule, params, "ok" if code < 400 else "error", code,
                                            None, started))

    def _authenticate(self, scope: Scope, method: str, rule: Rule | None) -> Principal | None:
        """The caller, or None (allowed only when no credential is required or the route is open).
        A credential that does not check out is refused only where one is needed: clients send
        placeholder keys ("ollama", "unused") to servers without authentication."""
        required = self.auth.required(self.loopback)
        needed = required and (rule is None or rule.family != "open")
        headers = _headers(scope)
        token = _bearer(headers)
        if token:
            try:
                return self.auth.authenticate(token)
            except BendiError:
                if needed:
                    raise
                return None
        cookie = _cookie(headers, SESSION_COOKIE)
        if cookie:
            session = self.auth.session(cookie)
            if session is not None:
                if (method not in SAFE_METHODS and (rule is None or rule.family != "open")
                        and not same(headers.get(CSRF_HEADER, ""), session.csrf)):
                    raise PermissionDenied("missing or wrong CSRF token: send the X-CSRF-Token header "
                                           "that /auth/login (or GET /auth/session) returned")
                return session.principal
            if needed:
                raise AuthenticationError("the login session has expired; log in again")
        if needed:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        return None

    @staticmethod
    def _authorise(principal: Principal, rule: Rule, params: dict[str, Any]) -> None:
        name = params.get("name")
        # a knowledge base the caller may not read does not exist for them, whatever else
        if rule.kb is not None and name is not None and not principal.can_read(str(name)):
            raise kb_not_found(str(name))
        if not principal.allows(rule.family):
            if rule.family == "admin":
                raise PermissionDenied("this route is for admins (and keys scoped to admin routes)")
            raise PermissionDenied(f"this API key is not scoped to {rule.family} routes")
        if rule.kb == "write" and name is not None and not principal.can_write(str(name)):
            raise PermissionDenied(f"no write access to knowledge base {name!r}")

    async def _refuse(self, send: Send, path: str, exc: BendiError, context: RequestContext, rule: Rule | None,
                      params: dict[str, Any], started: float) -> None:
        if rule is None or rule.family != "open":
            self.auth.audit.add(self._entry(context, rule, params, "refused", exc.status, exc.message, started))
        body = json.dumps(error_body(path, exc)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(exc).items()]
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _entry(context: RequestContext, rule: Rule | None, params: dict[str, Any], status: str, code: int,
               error: str | None, started: float) -> AuditEntry:
        kb = params.get("name") if rule is not None and rule.kb is not None else None
        document = params.get("document")
        return AuditEntry.of(context, "http", status, knowledge_base=kb, code=code, error=error,
                             documents=[str(document)] if document else [],
                             latency=time.perf_counter() - started)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _bearer(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key", "").strip()


def _cookie(headers: dict[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


def caller_access(scope: Scope) -> Principal | None:
    """The principal the middleware found for this request (None: no limits)."""
    access = scope.get("state", {}).get("access")
    return access if isinstance(access, Principal) else None


def visible(scope: Scope, knowledge_bases: list[str]) -> list[str]:
    """The knowledge bases among `knowledge_bases` the caller may see."""
    access = caller_access(scope)
    return knowledge_bases if access is None else access.visible(knowledge_bases)


def usable(scope: Scope, models: list[str]) -> list[str]:
    """The models among `models` (full names) the caller's credential may run."""
    access = caller_access(scope)
    return models if access is None else [m for m in models if access.allows_model(m)]
