"""The engine interface. Built-in engines register through the same call a third-party engine
would use (an entry point in the `bendi.engines` group); core never branches on engine names."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

from bendi.errors import EngineError
from bendi.runtime.types import ChatRequest, Event
from bendi.store import ModelRecord


class LoadedModel(Protocol):
    """A model ready to serve; every engine's loaded models look like this."""

    name: str
    engine_name: str
    n_ctx_seq: int
    slots: int

    def generate(self, request: ChatRequest) -> Generator[Event, None, None]: ...

    def agenerate(self, request: ChatRequest) -> AsyncIterator[Event]: ...

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]: ...

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]: ...

    @property
    def busy(self) -> int: ...

    def close(self, timeout: float = 10.0) -> None: ...


@dataclass
class EngineOptions:
    """What a caller asks of an engine when loading a model."""

    ctx: int
    slots: int = 8
    batch_tokens: int = 512
    threads: int | None = None
    gpu_layers: int = 0
    queue_size: int = 64
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    name: str

    def accepts(self, record: ModelRecord) -> bool: ...

    def load(self, record: ModelRecord, options: EngineOptions) -> LoadedModel: ...


class LlamaCppEngine:
    """GGUF models through llama.cpp, in process."""

    name = "llama.cpp"

    def accepts(self, record: ModelRecord) -> bool:
        return record.manifest.get("details", {}).get("format", "gguf") == "gguf"

    def load(self, record: ModelRecord, options: EngineOptions) -> LoadedModel:
        from bendi.runtime.llama import LlamaModel, LoadOptions

        return LlamaModel(
            record.path,
            LoadOptions(
                ctx=options.ctx,
                slots=options.slots,
                batch_tokens=options.batch_tokens,
                threads=options.threads,
                gpu_layers=options.gpu_layers,
                queue_size=options.queue_size,
                template=record.manifest.get("template"),
                system=record.manifest.get("system"),
                parameters=record.parameters,
            ),
            name=str(record.name),
        )


class EngineRegistry:
    """Engines by name, filled from the `bendi.engines` entry points."""

    def __init__(self) -> None:
        self._engines: dict[str, Engine] = {}

    def register(self, engine: Engine) -> None:
        self._engines[engine.name] = engine

    def names(self) -> list[str]:
        return list(self._engines)

    def for_record(self, record: ModelRecord) -> Engine:
        wanted = record.manifest.get("engine")
        if wanted:
            if wanted not in self._engines:
                raise EngineError(f"model {record.name} needs engine {wanted!r}, which is not installed")
            return self._engines[wanted]
        for engine in self._engines.values():
            if engine.accepts(record):
                return engine
        raise EngineError(f"no installed engine can run model {record.name}")

    @classmethod
    def discover(cls) -> EngineRegistry:
        registry = cls()
        for ep in entry_points(group="bendi.engines"):
            factory: Callable[[], Engine] = ep.load()
            registry.register(factory())
        if not registry._engines:  # running from a source tree without installed metadata
            registry.register(LlamaCppEngine())
        return registry
