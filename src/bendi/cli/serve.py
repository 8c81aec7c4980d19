"""`bendi serve`: the OpenAI- and Ollama-compatible HTTP server."""

from __future__ import annotations

import contextlib
import threading
from types import FrameType

import click
import uvicorn

from bendi.config import Settings
from bendi.errors import ServerBusy
from bendi.server.security import check_bind
from bendi.services import Services


@click.command()
@click.option("--host", help="Address to bind (default 127.0.0.1; others need an admin user or an API key).")
@click.option("--port", type=int, help="Port (default 11435).")
@click.option("--api-key", help="A bootstrap admin key: 'Authorization: Bearer KEY' (default: BENDI_API_KEY).")
@click.option("--slots", type=int, help="Concurrent sequences per model (continuous batching).")
@click.option("--ctx", "ctx_len", type=int, help="Context length per sequence.")
@click.option("--keep-alive", help="How long idle models stay loaded (e.g. 5m, 1h, -1 forever).")
@click.option("--demo", is_flag=True, help="Build the demo knowledge base at start.")
@click.option("--preload", multiple=True, help="Load these models at start.")
@click.option("--engine", help="Prefer this engine (llama.cpp, vllm) for every model it can run.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, api_key: str | None, slots: int | None,
          ctx_len: int | None, keep_alive: str | None, demo: bool, preload: tuple[str, ...],
          engine: str | None) -> None:
    """Start the OpenAI- and Ollama-compatible server."""
    from bendi.runtime.manager import parse_keep_alive
    from bendi.server.app import create_app

    shared: Settings = ctx.find_root().obj
    settings = shared.replace(
        host=host or None, port=port or None, api_key=api_key or None, slots=slots or None,
        ctx=ctx_len or None, engine=engine or None,
        keep_alive=parse_keep_alive(keep_alive, shared.keep_alive) if keep_alive is not None else None,
    )
    services = Services.build(settings)
    try:
        check_bind(settings.host, settings.api_key, services.auth.has_admin())
    except BaseException:
        services.close()
        raise

    def startup(svc: Services) -> None:
        if demo:
            from bendi.kb.demo import ensure_demo_kb

            name = ensure_demo_kb(svc)
            click.echo(f"demo knowledge base ready: {name} (try: bendi kb ask {name} \"...\")")
        for model in preload:
            svc.generation.load(model)
        click.echo(f"bendi serving on http://{settings.host}:{settings.port} "
                   f"(OpenAI: /v1, Ollama: /api); Ctrl-C to stop")

    app = create_app(settings, services=services, on_startup=startup)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            timeout_graceful_shutdown=int(settings.shutdown_grace) + 5)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after a clean stop
        _DrainingServer(config, services, settings.shutdown_grace).run()


class _DrainingServer(uvicorn.Server):
    """On Ctrl-C/SIGTERM: stop accepting, let streams run for the grace period, then end the
    ones still running with an error event, so every client gets a well-formed ending."""

    def __init__(self, config: uvicorn.Config, services: Services, grace: float) -> None:
        super().__init__(config)
        self._services = services
        self._grace = grace
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._timer is None:
            error = ServerBusy("the server is shutting down; retry against another instance")
            self._timer = threading.Timer(self._grace, self._services.models.abort_all, args=(error,))
            self._timer.daemon = True
            self._timer.start()
        super().handle_exit(sig, frame)


def register(group: click.Group) -> None:
    group.add_command(serve)
