"""Prometheus metrics, one registry per app (no process globals).

Token counts and latencies come from the generation service's observer hook (every generation,
knowledge-base answers included); loaded models and queues are read when scraped."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bendi.core.observe import Admission, GenerationRecord
from bendi.runtime.manager import ModelManager


class _ModelsCollector(Collector):
    """Loaded models and their queues, read when scraped."""

    def __init__(self, manager: Callable[[], ModelManager | None]) -> None:
        self._manager = manager

    def collect(self):  # type: ignore[no-untyped-def]
        loaded = GaugeMetricFamily("bendi_model_loaded", "Models loaded in memory", labels=["model"])
        busy = GaugeMetricFamily("bendi_requests_running", "Requests running or queued per model",
                                 labels=["model"])
        queued = GaugeMetricFamily("bendi_queue_depth", "Requests waiting for a slot", labels=["model"])
        manager = self._manager()
        for item in manager.loaded() if manager else []:
            loaded.add_metric([item.name], 1)
            busy.add_metric([item.name], item.model.busy)
            queued.add_metric([item.name], item.model.queued)
        yield loaded
        yield busy
        yield queued


class Metrics:
    def __init__(self, manager: Callable[[], ModelManager | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("bendi_http_requests", "HTTP requests", ["route", "status"], registry=r)
        self.prompt_tokens = Counter("bendi_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.output_tokens = Counter("bendi_output_tokens", "Tokens generated", ["model"], registry=r)
        self.ttft = Histogram(
            "bendi_time_to_first_token_seconds", "Time from request to first token", ["model"],
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r,
        )
        self.tpot = Histogram(
            "bendi_time_per_output_token_seconds", "Decode time per generated token", ["model"],
            buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28), registry=r,
        )
        self.loaded_models = Gauge("bendi_models_loaded", "Number of loaded models", registry=r)
        r.register(_ModelsCollector(manager))
        self._manager = manager

    # -- the observer hook (bendi.core.observe) ------------------------------------------------

    wants_text = False

    def admit(self, admission: Admission) -> None:
        return None  # metrics refuse nothing

    def record(self, record: GenerationRecord) -> None:
        """Count a finished generation's tokens and times (embeddings are not counted here)."""
        done, model = record.done, record.model
        if done is None or model is None or record.kind == "embedding":
            return
        self.prompt_tokens.labels(model).inc(done.usage.prompt_tokens)
        self.output_tokens.labels(model).inc(done.usage.completion_tokens)
        if done.usage.completion_tokens:
            self.ttft.labels(model).observe(done.ttft)
        if done.usage.completion_tokens > 1:
            self.tpot.labels(model).observe(done.decode_seconds / (done.usage.completion_tokens - 1))

    def render(self) -> bytes:
        manager = self._manager()
        self.loaded_models.set(len(manager.loaded()) if manager else 0)
        return generate_latest(self.registry)


class CountResponses:
    """ASGI middleware, outermost: counts every response by route and status, the ones the other
    middleware answer (401, 403, 413) and the 500 of an unhandled error included. Pure ASGI: a
    BaseHTTPMiddleware runs the app in a task group, where a failing body read became a crash.
    The route label is the route's path template; "unmatched" for requests refused before routing
    and for paths with no route (a label per URL would let clients grow the registry)."""

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except Exception:
            status = status or 500  # the server's error handler answers 500 (if nothing was sent)
            raise
        finally:
            if status is not None:
                route = str(getattr(scope.get("route"), "path", "unmatched"))
                self.counter.labels(route, str(status)).inc()
