"""One log line per request: method, route, model, status, tokens, duration.

`AccessLog` is ASGI middleware. It opens a record per request in a context variable; the
generation layer adds the model and token counts to it (`note_generation`); the line is written
when the response's last byte has been sent, so a stream is logged with its full duration.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("bendi.access")

_record: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("bendi_access", default=None)

#: routes not worth a line each (health checks and scrapes arrive every few seconds)
QUIET = frozenset({"/health", "/metrics", "/favicon.ico"})


def note_generation(model: str, prompt_tokens: int, completion_tokens: int) -> None:
    """Add a finished generation's model and tokens to the current request's log line."""
    record = _record.get()
    if record is not None:
        record["model"] = model
        record["prompt_tokens"] = record.get("prompt_tokens", 0) + prompt_tokens
        record["completion_tokens"] = record.get("completion_tokens", 0) + completion_tokens


def note_model(model: str) -> None:
    """Name the model of the current request (for requests that do not generate: embeddings)."""
    record = _record.get()
    if record is not None:
        record.setdefault("model", model)


class AccessLogObserver:
    """The generation service's observer that puts each generation's model and tokens on the
    line of the request it belongs to."""

    wants_text = False

    def admit(self, admission: Any) -> None:
        return None

    def record(self, record: Any) -> None:
        if record.model:
            note_generation(record.model, record.prompt_tokens, record.completion_tokens)


def format_line(record: dict[str, Any]) -> str:
    parts = [record["method"], record["path"], str(record.get("status", "-"))]
    if record.get("model"):
        parts.append(record["model"])
    if "prompt_tokens" in record:
        parts.append(f"{record['prompt_tokens']}+{record['completion_tokens']} tokens")
    parts.append(f"{record['seconds']:.2f}s")
    if record.get("disconnected"):
        parts.append("(client left)")
    return " ".join(parts)


class AccessLog:
    """ASGI middleware writing one line per HTTP request to the `bendi.access` logger."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in QUIET or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        record: dict[str, Any] = {"method": scope.get("method", ""), "path": scope.get("path", "")}
        token = _record.set(record)
        started = time.perf_counter()
        logged = False

        def write() -> None:
            nonlocal logged
            if not logged:
                logged = True
                record["seconds"] = time.perf_counter() - started
                log.info(format_line(record))

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                write()

        try:
            await self.app(scope, receive, watched_send)
        except BaseException:
            record.setdefault("status", 500)
            write()
            raise
        finally:
            if not logged:
                record["disconnected"] = True
                write()
            _record.reset(token)
