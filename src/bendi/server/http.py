"""The HTTP toolkit both dialects share: SSE and NDJSON framing, streaming responses, the error
event that ends a stream which fails after its status line was sent, and what a route knows about
its caller and the app's services."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from bendi.core.context import RequestContext
from bendi.errors import BendiError
from bendi.server.metrics import Metrics
from bendi.services import Services

log = logging.getLogger(__name__)

SSE_MEDIA = "text/event-stream"
NDJSON_MEDIA = "application/x-ndjson"
#: keep proxies from buffering a stream
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_DONE = b"data: [DONE]\n\n"


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event carrying `data` (JSON, or a bare string such as [DONE])."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def ndjson(data: dict[str, Any]) -> bytes:
    """One line of newline-delimited JSON."""
    return (json.dumps(data, ensure_ascii=False) + "\n").encode()


async def ending_with_error(frames: AsyncIterator[bytes], error_frame: Callable[[BendiError], bytes],
                            trailer: bytes | None = None) -> AsyncIterator[bytes]:
    """`frames`, then `trailer`; an error while streaming becomes one last `error_frame` event
    (before the trailer), so the client always sees a well-formed ending."""
    try:
        async for frame in frames:
            yield frame
    except BendiError as exc:
        yield error_frame(exc)
    except Exception as exc:  # noqa: BLE001 - a bug: still a well-formed ending for the client
        log.exception("stream failed")
        yield error_frame(BendiError(f"internal error: {type(exc).__name__}"))
    if trailer is not None:
        yield trailer


def sse_response(frames: AsyncIterator[bytes], error_frame: Callable[[BendiError], bytes]) -> StreamingResponse:
    """An OpenAI-style event stream: the frames, an error event if it fails, then [DONE]."""
    return StreamingResponse(ending_with_error(frames, error_frame, SSE_DONE), media_type=SSE_MEDIA,
                             headers=SSE_HEADERS)


def ndjson_response(frames: AsyncIterator[bytes], error_frame: Callable[[BendiError], bytes]) -> StreamingResponse:
    """An Ollama-style stream of JSON lines; an error becomes the last line."""
    return StreamingResponse(ending_with_error(frames, error_frame), media_type=NDJSON_MEDIA)


# -- what a route knows -----------------------------------------------------------------------

def services(request: Request) -> Services:
    """The app's services (see create_app)."""
    svc: Services = request.app.state.services
    return svc


def metrics(request: Request) -> Metrics:
    m: Metrics = request.app.state.metrics
    return m


def caller(request: Request) -> RequestContext:
    """Who is asking, from where, on which route: from what the auth middleware found."""
    state = request.scope.get("state", {})
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    return RequestContext(
        principal=str(state.get("principal", "anonymous")),
        route=f"{request.method} {path}",
        client=request.client.host if request.client else None,
        api_key_id=state.get("api_key_id"),
        access=state.get("access"),
    )
