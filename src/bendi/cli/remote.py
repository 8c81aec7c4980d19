"""`bendi ps` and `bendi stop`: what a running server has loaded, and unloading a model from it.

They talk to the server over its Ollama API (`/api/ps`; `/api/generate` with keep_alive 0), as
`ollama ps` and `ollama stop` do, so they work with any bendi server this machine can reach.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click
import httpx

from bendi.cli.common import echo_json, human_bytes, table
from bendi.config import Settings
from bendi.errors import BendiError, InvalidRequest

URL_HELP = "The server, e.g. http://127.0.0.1:11435 (default: BENDI_HOST and BENDI_PORT)."


def server_url(settings: Settings, url: str | None) -> str:
    """The URL of the server these commands talk to."""
    if url:
        return url.rstrip("/") if "://" in url else f"http://{url.rstrip('/')}"
    host = settings.host
    if host in ("", "0.0.0.0", "::"):  # a server on every address is reachable on loopback
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def call(settings: Settings, url: str, method: str, path: str, body: Any = None) -> Any:
    """One request to the server; its error message, or a clear line when nothing answers."""
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    try:
        response = httpx.request(method, url + path, json=body, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        raise BendiError(f"no bendi server answers at {url} ({type(exc).__name__}); "
                         "start one with `bendi serve`, or say where it is with --url") from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400:
        message = data.get("error") if isinstance(data, dict) else None
        if isinstance(message, dict):
            message = message.get("message")
        raise BendiError(f"{url}: {message or f'HTTP {response.status_code}'}")
    return data


def _until(expires_at: str) -> str:
    try:
        when = datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return expires_at
    seconds = when - time.time()
    if seconds > 50 * 365 * 86400:
        return "Forever"
    if seconds < 60:
        return "less than a minute from now"
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = round(seconds / size)
            return f"{n} {unit}{'s' if n > 1 else ''} from now"
    return expires_at


@click.command("ps")
@click.option("--url", help=URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def ps(ctx: click.Context, url: str | None, as_json: bool) -> None:
    """Models a running server has loaded, their memory and how long they stay."""
    settings: Settings = ctx.find_root().obj
    base = server_url(settings, url)
    models = call(settings, base, "GET", "/api/ps").get("models", [])
    if as_json:
        echo_json(models)
        return
    rows = []
    for m in models:
        vram, size = m.get("size_vram", 0), m.get("size", 0)
        processor = "100% CPU" if not vram else ("100% GPU" if vram >= size else
                                                 f"{round(100 * vram / size)}% GPU")
        rows.append((m.get("name"), str(m.get("digest", ""))[:12], human_bytes(size), processor,
                     m.get("context_length", ""), _until(m.get("expires_at", ""))))
    click.echo(table(["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"], rows))


@click.command("stop")
@click.argument("model")
@click.option("--url", help=URL_HELP)
@click.pass_context
def stop(ctx: click.Context, model: str, url: str | None) -> None:
    """Unload MODEL from a running server (requests in flight finish first)."""
    settings: Settings = ctx.find_root().obj
    base = server_url(settings, url)
    loaded = [m.get("name") for m in call(settings, base, "GET", "/api/ps").get("models", [])]
    wanted = model if ":" in model else f"{model}:latest"
    if model not in loaded and wanted not in loaded:
        hint = f"; loaded: {', '.join(loaded)}" if loaded else "; nothing is loaded"
        raise InvalidRequest(f"{model} is not loaded on {base}{hint}")
    call(settings, base, "POST", "/api/generate", {"model": model, "keep_alive": 0})
    click.echo(f"stopped {model}")


def register(group: click.Group) -> None:
    group.add_command(ps)
    group.add_command(stop)
