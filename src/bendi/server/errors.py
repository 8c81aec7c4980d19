"""Errors over HTTP: bendi errors mapped by class to each dialect's error shape.

OpenAI routes (everything outside /api/) answer `{"error": {"message", "type", "param", "code"}}`;
Ollama routes (/api/...) answer `{"error": "..."}`. Mid-stream errors become a final event.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from bendi.errors import BendiError, HTTPError, InvalidRequest, NotFound

log = logging.getLogger(__name__)


def is_ollama_path(path: str) -> bool:
    return path.startswith("/api/")


def openai_error_body(exc: BendiError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}}


def ollama_error_body(exc: BendiError) -> dict[str, Any]:
    return {"error": exc.message}


def error_body(path: str, exc: BendiError) -> dict[str, Any]:
    return ollama_error_body(exc) if is_ollama_path(path) else openai_error_body(exc)


def error_headers(exc: BendiError) -> dict[str, str]:
    """Headers an error response carries: Retry-After for 429 and 503, WWW-Authenticate for 401."""
    if exc.status in (429, 503):
        wait = getattr(exc, "retry_after", None)
        return {"Retry-After": str(max(1, math.ceil(wait))) if wait is not None else "1"}
    if exc.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    return {}


async def send_error(send: Send, path: str, exc: BendiError) -> None:
    """Answer with `exc` in the dialect of `path` from ASGI middleware, outside the app's handlers."""
    body = json.dumps(error_body(path, exc)).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(exc).items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_response(request: Request, exc: BendiError) -> JSONResponse:
    return JSONResponse(error_body(request.url.path, exc), status_code=exc.status,
                        headers=error_headers(exc) or None)


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure through one mapping, by exception class."""

    @app.exception_handler(BendiError)
    async def _bendi(request: Request, exc: BendiError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err: BendiError
        if exc.status_code == 404:
            err = NotFound(f"no route {request.method} {request.url.path}")
        else:
            err = HTTPError(exc.status_code, str(exc.detail))
        return error_response(request, err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(request, BendiError(f"internal error: {type(exc).__name__}"))


def validation_error(errors: Any) -> InvalidRequest:
    """A readable 400 from pydantic's error list (first problem, with its field path)."""
    items = list(errors)
    if not items:
        return InvalidRequest("invalid request body")
    first = items[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    where = ".".join(loc)
    msg = first.get("msg", "invalid value")
    more = f" (and {len(items) - 1} more problems)" if len(items) > 1 else ""
    return InvalidRequest(f"{where}: {msg}{more}" if where else f"{msg}{more}", param=where or None)
