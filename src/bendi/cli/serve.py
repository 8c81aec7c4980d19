"""`bendi serve`: the OpenAI- and Ollama-compatible HTTP server."""

from __future__ import annotations

import logging

import click

from bendi.config import Settings
from bendi.server.security import check_bind

log = logging.getLogger(__name__)


@click.command()
@click.option("--host", help="Address to bind (default 127.0.0.1; others need an API key).")
@click.option("--port", type=int, help="Port (default 11435).")
@click.option("--api-key", envvar="BENDI_API_KEY", help="Require 'Authorization: Bearer KEY'.")
@click.option("--slots", type=int, help="Concurrent sequences per model (continuous batching).")
@click.option("--ctx", "ctx_len", type=int, help="Context length per sequence.")
@click.option("--keep-alive", help="How long idle models stay loaded (e.g. 5m, 1h, -1 forever).")
@click.option("--demo", is_flag=True, help="Build the demo knowledge base at start.")
@click.option("--preload", multiple=True, help="Load these models at start.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, api_key: str | None, slots: int | None,
          ctx_len: int | None, keep_alive: str | None, demo: bool, preload: tuple[str, ...]) -> None:
    """Start the OpenAI- and Ollama-compatible server."""
    import uvicorn

    from bendi.runtime.manager import parse_keep_alive
    from bendi.server.app import create_app

    settings: Settings = ctx.find_root().obj
    settings.host = host or settings.host
    settings.port = port or settings.port
    settings.api_key = api_key or settings.api_key
    settings.slots = slots or settings.slots
    settings.ctx = ctx_len or settings.ctx
    if keep_alive is not None:
        settings.keep_alive = parse_keep_alive(keep_alive, settings.keep_alive)
    check_bind(settings.host, settings.api_key)

    def startup(services: object) -> None:
        from bendi.services import Services

        assert isinstance(services, Services)
        if demo:
            try:
                from bendi.kb.demo import ensure_demo_kb
            except ImportError:
                log.warning("the knowledge-base package is not available; no demo")
            else:
                name = ensure_demo_kb(services)
                click.echo(f"demo knowledge base ready: {name} (try: bendi kb ask {name} \"...\")")
        for model in preload:
            services.models.acquire(model)
        click.echo(f"bendi serving on http://{settings.host}:{settings.port} "
                   f"(OpenAI: /v1, Ollama: /api); Ctrl-C to stop")

    app = create_app(settings, on_startup=startup)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=10)


def register(group: click.Group) -> None:
    group.add_command(serve)
