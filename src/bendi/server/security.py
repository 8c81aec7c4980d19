"""Safe defaults: loopback unless authentication is on, request size limits. Who may call what is
decided in server/access.py."""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bendi.errors import BendiError, InvalidRequest, RequestTooLarge
from bendi.server.errors import send_error


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None, has_admin: bool = False) -> None:
    """Refuse to expose the server beyond this machine without authentication."""
    if not is_loopback(host) and not api_key and not has_admin:
        raise InvalidRequest(
            f"refusing to listen on {host} without authentication: anyone on the network could use "
            "your models and documents. Create an admin (bendi user add NAME --role admin), or set a "
            "bootstrap key (--api-key or BENDI_API_KEY), or bind 127.0.0.1."
        )


class Guard:
    """ASGI middleware: a body size limit."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_body:
                await send_error(send, path, _too_large(self.max_body))
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
                await send_error(send, path, _too_large(self.max_body))
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> BendiError:
    return RequestTooLarge(f"request body larger than {limit} bytes")

