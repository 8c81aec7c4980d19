"""`bendi serve`: the OpenAI- and Ollama-compatible HTTP server."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
from types import FrameType

import click
import uvicorn

from bendi.config import Settings
from bendi.errors import InvalidRequest, ServerBusy
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
@click.option("--model", "-m", "default_model",
              help="Model for requests that name none (as llama-server and vLLM serve theirs).")
@click.option("--quiet", "-q", is_flag=True, help="Do not log each request.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, api_key: str | None, slots: int | None,
          ctx_len: int | None, keep_alive: str | None, demo: bool, preload: tuple[str, ...],
          engine: str | None, default_model: str | None, quiet: bool) -> None:
    """Start the OpenAI- and Ollama-compatible server."""
    from bendi.runtime.manager import parse_keep_alive
    from bendi.server.app import create_app

    shared: Settings = ctx.find_root().obj
    settings = shared.replace(
        host=host or None, port=port or None, api_key=api_key or None, slots=slots or None,
        ctx=ctx_len or None, engine=engine or None, default_model=default_model or None,
        keep_alive=parse_keep_alive(keep_alive, shared.keep_alive) if keep_alive is not None else None,
    )
    check_port(settings.host, settings.port)  # a busy port: one line, before anything is built
    services = Services.build(settings)
    try:
        check_bind(settings.host, settings.api_key, services.auth.has_admin())
    except BaseException:
        services.close()
        raise
    if not quiet:
        _log_requests()

    def startup(svc: Services) -> None:
        if demo:
            from bendi.kb.demo import ensure_demo_kb

            name = ensure_demo_kb(svc)
            click.echo(f"demo knowledge base ready: {name} (try: bendi kb ask {name} \"...\")")
        if settings.default_model:
            svc.store.get(settings.default_model)  # an unknown default fails at start, not later
        for model in preload:
            svc.generation.load(model)
        base = f"http://{_url_host(settings.host)}:{settings.port}"
        click.echo(f"bendi serving on {base} (OpenAI: {base}/v1, Ollama: {base}); Ctrl-C to stop")
        click.echo(f"chat in the browser: {base}/")

    app = create_app(settings, services=services, on_startup=startup)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            timeout_graceful_shutdown=int(settings.shutdown_grace) + 5)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after a clean stop
        _DrainingServer(config, services, settings.shutdown_grace).run()


def check_port(host: str, port: int) -> None:
    """One clear line when the address is taken, instead of uvicorn's error after start-up."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as uvicorn binds: a port left in TIME_WAIT by a server that just stopped is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InvalidRequest(
                    f"port {port} on {host} is already in use (another bendi serve? `bendi ps` asks "
                    f"it); stop that server or choose another port with --port") from None
            raise InvalidRequest(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _log_requests() -> None:
    access = logging.getLogger("bendi.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


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
