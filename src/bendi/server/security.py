"""Safe defaults: loopback unless a key is set, Bearer auth, request size limits."""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bendi.errors import AuthenticationError, BendiError, InvalidRequest, RequestTooLarge
from bendi.server.errors import error_body

#: the web page itself holds nothing secret; it asks for the key and sends it with each call
OPEN_PATHS = frozenset({"/health", "/", "/favicon.ico", "/ui"})


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to expose the server beyond this machine without authentication."""
    if not is_loopback(host) and not api_key:
        raise InvalidRequest(
            f"refusing to listen on {host} without authentication: anyone on the network could use "
            "your models and documents. Set an API key (--api-key or BENDI_API_KEY), or bind 127.0.0.1."
        )


class Guard:
    """ASGI middleware: Bearer key on every route but /health, and a body size limit."""

    def __init__(self, app: ASGIApp, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and path not in OPEN_PATHS:
            if not self._authorised(headers):
                await _send_error(send, path, AuthenticationError(
                    "missing or wrong API key: send 'Authorization: Bearer <key>'"))
                return
            # who is asking, for the generation service's observers (see server/http.caller)
            state = scope.setdefault("state", {})
            state["principal"], state["api_key_id"] = "api-key", "default"
        length = headers.get("content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_body:
                await _send_error(send, path, _too_large(self.max_body))
                return
            await self.app(scope, receive, send)  # the HTTP parser holds the body to its length
            return
        # No length (chunked transfer): read the body here, up to the limit, and hand it on whole.
        # Refusing from inside the app's receive would surface as a crash in the middle of the
        # app instead of a 413.
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.max_body:
                await _send_error(send, path, _too_large(self.max_body))
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorised(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else headers.get("x-api-key", "")
        return bool(token) and hmac.compare_digest(token.encode(), str(self.api_key).encode())


def _too_large(limit: int) -> BendiError:
    return RequestTooLarge(f"request body larger than {limit} bytes")


async def _send_error(send: Send, path: str, exc: BendiError) -> None:
    body = json.dumps(error_body(path, exc)).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
