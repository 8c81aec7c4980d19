"""The engine contract: what every engine's loaded model offers, the options a model is loaded
with, and the registry engines join.

Built-in engines register through the same call a third-party engine would use (an entry point in
the `bendi.engines` group); nothing above runtime/ names an engine or reaches past this contract.

A loaded model generates (`agenerate`, and `generate` for blocking callers), embeds, tokenizes,
says how busy it is (`busy`, `queued`), ends everything in flight (`abort`) and frees itself
(`close`). One request is cancelled by closing its event iterator (a client went away, Ctrl-C).
What a model can do beyond plain generation is in its `capabilities`; callers check them rather
than the engine's name. An engine whose generation is only asynchronous (one that talks to a
server over HTTP) gets `generate` from `BlockingGenerate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

from bendi.config import Settings
from bendi.errors import BendiError, EngineError
from bendi.runtime.types import ChatRequest, Event
from bendi.store import ModelRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capabilities:
    """What a loaded model can do beyond plain chat and completion."""

    #: `embed` works (a model without it raises an InvalidRequest naming the model)
    embeddings: bool = True
    #: response_format {"type": "json_object"} / json_schema is enforced while sampling
    grammar: bool = True
    #: per-token log-probabilities (and top alternatives) on TextDelta events
    logprobs: bool = True
    #: tool calls are parsed out of the output into ToolCall events
    tool_calls: bool = False


@dataclass
class LoadOptions:
    """How to load a model: sizes from the settings, the template from the model's manifest.
    Every engine takes this one type; what only one engine understands goes in `extra`. (Sampling
    defaults and the default system prompt are applied by the generation service, per request.)"""

    ctx: int = 4096  # context per sequence slot
    slots: int = 8
    batch_tokens: int = 512
    threads: int | None = None  # None: the engine decides (llama.cpp: physical cores, tuned)
    #: layers offloaded to GPUs; None: the engine places the model as `bendi plan` says
    gpu_layers: int | None = None
    queue_size: int = 64  # requests waiting beyond the slots before ServerBusy
    #: None lets the engine decide (flash attention where the backend has it); False/True force it
    flash_attn: bool | None = None
    #: reuse a slot's KV cells when a new prompt starts with the tokens it already holds
    prompt_cache: bool = True
    template: str | None = None  # overrides the chat template in the model file
    extra: dict[str, Any] = field(default_factory=dict)
    #: all the settings, for what only one engine reads (the vLLM environment, its devices)
    settings: Settings | None = None


class LoadedModel(Protocol):
    """A model ready to serve; every engine's loaded models look like this."""

    name: str
    engine_name: str
    #: context length per sequence (what one request may use, prompt and answer together)
    n_ctx_seq: int
    #: sequences generated at once
    slots: int
    capabilities: Capabilities

    def agenerate(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        """Events of one request: deltas, then one Done; closing the generator cancels it. Errors
        the engine can see before it starts (template, prompt too long, queue full) raise on the
        first iteration as bendi errors."""
        ...

    def generate(self, request: ChatRequest) -> Generator[Event, None, None]:
        """The blocking form of `agenerate`; closing the generator cancels the request."""
        ...

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """L2-normalised vectors, one per text, and the number of tokens read (blocking)."""
        ...

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]: ...

    @property
    def busy(self) -> int:
        """Requests running or waiting."""
        ...

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        ...

    def abort(self, error: BendiError) -> None:
        """End every running and waiting request with `error` (shutting down)."""
        ...

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests, let running ones end (at most `timeout` seconds), free memory."""
        ...


class Engine(Protocol):
    name: str

    def accepts(self, record: ModelRecord) -> bool:
        """Whether this engine can run the model (its format), when the manifest names none."""
        ...

    def load(self, record: ModelRecord, options: LoadOptions) -> LoadedModel: ...


class EngineRegistry:
    """Engines by name, filled from the `bendi.engines` entry points."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}

    def register(self, engine: Engine) -> None:
        self._engines[engine.name] = engine

    def names(self) -> list[str]:
        return list(self._engines)

    def for_record(self, record: ModelRecord, prefer: str | None = None) -> Engine:
        """The engine the model's manifest names, else `prefer` (`bendi serve --engine`) when it
        can run the model, else the first engine that can."""
        wanted = record.manifest.get("engine")
        if wanted:
            if wanted not in self._engines:
                raise EngineError(f"model {record.name} needs engine {wanted!r}, which is not installed")
            return self._engines[wanted]
        if prefer is not None:
            if prefer not in self._engines:
                raise EngineError(f"engine {prefer!r} is not installed; installed: {', '.join(self._engines)}")
            if self._engines[prefer].accepts(record):
                return self._engines[prefer]
        for engine in self._engines.values():
            if engine.accepts(record):
                return engine
        raise EngineError(f"no installed engine can run model {record.name}")

    @classmethod
    def discover(cls) -> EngineRegistry:
        registry = cls()
        for ep in entry_points(group="bendi.engines"):
            try:
                factory: Callable[[], Engine] = ep.load()
                registry.register(factory())
            except Exception as exc:  # noqa: BLE001 - one broken plugin must not stop the others
                log.warning("engine %s could not be loaded (%s: %s)", ep.name, type(exc).__name__, exc)
        if not registry._engines:  # running from a source tree without installed metadata
            from bendi.runtime.llama.engine import LlamaCppEngine

            registry.register(LlamaCppEngine())
        return registry


class BlockingGenerate:
    """`generate` for an engine whose generation is only asynchronous: its `agenerate` runs on a
    private event loop in a helper thread, the events come back through a queue, and closing the
    iterator cancels the request there."""

    def agenerate(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        raise NotImplementedError

    def generate(self, request: ChatRequest) -> Generator[Event, None, None]:
        items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        closed = threading.Event()
        running: dict[str, Any] = {}

        async def pump() -> None:
            running["loop"] = asyncio.get_running_loop()
            running["task"] = asyncio.current_task()
            try:
                if closed.is_set():
                    return
                async for event in self.agenerate(request):
                    items.put(("event", event))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer (or cancelled)
                items.put(("error", exc))
            finally:
                items.put(("end", None))

        thread = threading.Thread(target=asyncio.run, args=(pump(),), daemon=True,
                                  name="bendi-blocking-generate")
        thread.start()
        try:
            while True:
                kind, value = items.get()
                if kind == "event":
                    yield value
                elif kind == "error":
                    raise value
                else:
                    return
        finally:
            closed.set()
            task = running.get("task")
            if task is not None and thread.is_alive():
                with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                    running["loop"].call_soon_threadsafe(task.cancel)
            thread.join()
