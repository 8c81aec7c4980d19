"""The web console: its page at / (for browsers) and its static files at /console/...

Every file is in the package (src/bendi/web): no CDN, no web fonts, no build step. `GET /` keeps
answering API clients as before (Ollama clients probe it): only a client that accepts text/html
gets the console. Files are read once, kept in memory with their gzip form and an ETag, and
served with headers that keep the page from loading anything from elsewhere.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse, RedirectResponse

router = APIRouter(tags=["console"])

#: where the console's files are served
ASSET_PREFIX = "/console/"
PROBE_TEXT = "bendi is running (Ollama- and OpenAI-compatible API)"
_MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8", ".json": "application/json"}
#: the page may talk to its own server only, run only its own scripts, and not be framed
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                                "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_SHELL = "index.html"
_LANG = re.compile(r"^\s*([a-zA-Z]{1,8})")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str


class Assets:
    """The console's files, loaded from the package once."""

    def __init__(self) -> None:
        self.files: dict[str, Asset] = {}
        root = resources.files("bendi.web")
        self._walk(root, "")

    def _walk(self, folder: Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                if not entry.name.startswith(("_", ".")):
                    self._walk(entry, f"{prefix}{entry.name}/")
                continue
            suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
            if suffix in _MEDIA:
                body = entry.read_bytes()
                self.files[prefix + entry.name] = Asset(
                    body, gzip.compress(body, 9, mtime=0), '"' + hashlib.sha256(body).hexdigest()[:16] + '"',
                    _MEDIA[suffix])

    def response(self, request: Request, name: str, *, body: bytes | None = None) -> Response:
        asset = self.files.get(name)
        if asset is None:
            return PlainTextResponse("not found", status_code=404)
        headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding",
                   "X-Content-Type-Options": "nosniff"}
        if body is None and request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        if body is not None:  # the page itself, filled in per request: not cached
            headers = {**SECURITY_HEADERS, "Cache-Control": "no-store", "Vary": "Accept, Accept-Language"}
            return Response(body, media_type=asset.media_type, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)


def _assets(request: Request) -> Assets:
    assets = getattr(request.app.state, "console_assets", None)
    if assets is None:
        assets = request.app.state.console_assets = Assets()
    return assets


def wants_html(request: Request) -> bool:
    """A browser navigating to the page (API clients send */* or application/json)."""
    return "text/html" in request.headers.get("accept", "")


def preferred_language(accept_language: str) -> str:
    """"zh" when the browser's first language is Chinese, else "en" (the page may switch)."""
    first = _LANG.match(accept_language.split(",")[0]) if accept_language else None
    return "zh" if first and first.group(1).lower() == "zh" else "en"


def shell(request: Request) -> Response:
    assets = _assets(request)
    lang = preferred_language(request.headers.get("accept-language", ""))
    page = assets.files[_SHELL].body.decode()
    page = page.replace('lang="en" data-lang="en"', f'lang="{"zh-CN" if lang == "zh" else "en"}" data-lang="{lang}"')
    return assets.response(request, _SHELL, body=page.encode())


@router.get("/", include_in_schema=False)
@router.head("/", include_in_schema=False)
async def root(request: Request) -> Response:
    if wants_html(request):
        return shell(request)
    # Ollama clients probe GET / before talking to the API.
    return PlainTextResponse(PROBE_TEXT, headers={"Vary": "Accept"})


@router.get("/ui", include_in_schema=False)
async def old_chat_page(request: Request) -> Response:
    """The chat page of earlier versions: now the console (/ui?q=...&model=... still works)."""
    query = urlencode({k: v for k, v in request.query_params.items() if k in ("q", "model")})
    return RedirectResponse("/" + (f"?{query}" if query else ""), status_code=307)


@router.get(ASSET_PREFIX + "{name:path}", include_in_schema=False)
async def asset(request: Request, name: str) -> Response:
    if name == _SHELL:
        return PlainTextResponse("not found", status_code=404)
    return _assets(request).response(request, name)
