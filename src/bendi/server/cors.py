"""CORS for browser applications on other origins: off unless `BENDI_CORS_ORIGINS` lists them.

A page served by another origin (Open WebUI's or a desktop app's webview, a developer's
localhost:3000) may call the API only from an origin on the list; preflight requests are answered
here, before authentication, since browsers send them without credentials.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware


def origins(setting: str | None) -> list[str]:
    """The allow-list from the setting: comma-separated origins, or `*` for any."""
    return [o.strip().rstrip("/") for o in (setting or "").split(",") if o.strip()]


def install_cors(app: FastAPI, setting: str | None) -> None:
    """Add the CORS middleware when origins are configured (call after the auth middleware, so
    CORS wraps it)."""
    allowed = origins(setting)
    if not allowed:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=allowed,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        # SDKs send headers of their own (the OpenAI SDK's x-stainless-*): allowed origins may send any
        allow_headers=["*"],
        expose_headers=["Retry-After"],
        max_age=600,
    )
