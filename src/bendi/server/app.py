"""The HTTP server: `create_app(settings)` builds a FastAPI app with its services on app.state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Response

from bendi import __version__
from bendi.config import Settings
from bendi.conversations import ConversationStore
from bendi.server.access import AccessGuard
from bendi.server.access_log import AccessLog, AccessLogObserver
from bendi.server.admin_routes import router as admin_router
from bendi.server.console_routes import Assets
from bendi.server.console_routes import router as console_router
from bendi.server.conversation_routes import router as conversation_router
from bendi.server.cors import install_cors
from bendi.server.crosssite import CrossSiteGuard, SiteRules
from bendi.server.errors import install_error_handlers
from bendi.server.kb_routes import router as kb_router
from bendi.server.metrics import CountResponses, Metrics
from bendi.server.model_routes import router as model_router
from bendi.server.ollama.router import router as ollama_router
from bendi.server.openai.router import router as openai_router
from bendi.server.openapi import install_openapi
from bendi.server.security import Guard, is_loopback
from bendi.server.session_routes import router as session_router
from bendi.services import Services

log = logging.getLogger(__name__)

#: how often idle models are checked against their keep-alive
REAP_INTERVAL = 1.0


def create_app(settings: Settings, services: Services | None = None,
               on_startup: Callable[[Services], None] | None = None) -> FastAPI:
    """Build the app. Services are created here unless given (tests may pass their own)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if on_startup is not None:
            await asyncio.to_thread(on_startup, svc)
        # knowledge-base vectors an earlier run left pending are embedded in the background
        resume = getattr(getattr(svc, "kb", None), "resume_vectors", None)
        if resume is not None:
            await asyncio.to_thread(resume)
        reaper = asyncio.create_task(_reap(svc))
        try:
            yield
        finally:
            reaper.cancel()
            # Loaded models let their running streams finish (bounded by the engine's close timeout).
            await asyncio.to_thread(svc.close)
            conversations.close()

    app = FastAPI(title="bendi", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    svc = services or Services.build(settings)
    metrics = Metrics(lambda: svc.models)
    svc.generation.observers.add(metrics)
    svc.generation.observers.add(AccessLogObserver())
    app.state.services = svc
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(openai_router)
    app.include_router(ollama_router)
    app.include_router(kb_router)
    app.include_router(session_router)
    app.include_router(admin_router)
    # the web console: its page and files, and the JSON it needs beyond the APIs above
    app.state.console_assets = Assets()
    app.state.conversations = conversations = ConversationStore(settings.db_path)
    app.include_router(console_router)
    app.include_router(conversation_router)
    app.include_router(model_router)

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "version": __version__,
                "models_loaded": [m.name for m in svc.models.loaded()]}

    @app.get("/metrics")
    async def render_metrics() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    # Added innermost first. From the outside in: every response is counted (refusals too); a web
    # page's requests are checked (Host, Origin); a caller is identified (or refused) before
    # anything reads the body; then the body size.
    app.add_middleware(Guard, max_body=settings.max_request_bytes)
    app.state.loopback = is_loopback(settings.host)
    app.add_middleware(AccessGuard, auth=svc.auth, loopback=app.state.loopback)
    # outside the access check: a browser's preflight carries no credentials
    install_cors(app, settings.cors_origins)
    app.add_middleware(CrossSiteGuard, rules=SiteRules.from_settings(settings))
    app.add_middleware(CountResponses, counter=metrics.requests)
    app.add_middleware(AccessLog)  # outermost: refused requests are logged too
    install_openapi(app)
    return app


async def _reap(services: Services) -> None:
    while True:
        await asyncio.sleep(REAP_INTERVAL)
        try:
            await asyncio.to_thread(services.models.unload_expired)
        except Exception:  # noqa: BLE001 - the reaper must keep running
            log.exception("unloading idle models failed")
