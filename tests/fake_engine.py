"""A small fake engine for shape tests: registered through the engine registry like any other,
asynchronous only (its blocking `generate` comes from BlockingGenerate, as a server-backed engine's
would), with scripted answers chosen by the last user message:

- "fail after N": N words, then an EngineError in the middle of the stream
- "think": a reasoning delta, then the answer
- a knowledge-base prompt ("... Answer with citations:"): an answer citing sources [1] and [2]
- anything else: the words of the message echoed back, one delta each
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import AsyncGenerator
from pathlib import Path

from bendi.config import Settings
from bendi.errors import BendiError, EngineError, ServerBusy
from bendi.runtime.engine import BlockingGenerate, Capabilities, EngineRegistry, LoadOptions
from bendi.runtime.types import ChatRequest, Done, Event, ReasoningDelta, TextDelta, Usage
from bendi.services import Services
from bendi.store import ModelRecord


def tiny_gguf(path: Path, name: str = "fake", pad: int = 0) -> Path:
    """A valid GGUF file with no tensors (the store only reads headers); `pad` changes its digest."""
    def text(s: str) -> bytes:
        return struct.pack("<Q", len(s)) + s.encode()

    kvs = [("general.architecture", "fake"), ("general.name", name)]
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for key, value in kvs:
        data += text(key) + struct.pack("<I", 8) + text(value)
    data += b"\0" * ((-len(data)) % 32 + 32 * pad)
    path.write_bytes(data)
    return path


class FakeModel(BlockingGenerate):
    """A loaded fake model: counts its requests, can be made to wait and to fail."""

    engine_name = "fake"
    capabilities = Capabilities(embeddings=True, grammar=False, logprobs=False, tool_calls=False)

    def __init__(self, name: str, options: LoadOptions, digest: str) -> None:
        self.name = name
        self.options = options
        self.digest = digest
        self.n_ctx_seq = options.ctx
        self.slots = options.slots
        self.running = 0
        self.requests: list[ChatRequest] = []
        self.closed = False
        self.aborted: BendiError | None = None

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    async def agenerate(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        if self.closed:
            raise ServerBusy(f"model {self.name} is unloading; retry the request")
        self.requests.append(request)
        last = (request.prompt if request.prompt is not None
                else str((request.messages or [{}])[-1].get("content", "")))
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in request.messages or []) or len(last)
        self.running += 1
        try:
            words = last.split() or ["..."]
            if last.startswith("fail after"):
                for i in range(int(words[2])):
                    yield TextDelta(f"w{i} ")
                raise EngineError("the fake engine failed on purpose")
            if last == "think":
                yield ReasoningDelta("pondering")
                words = ["done"]
            if last.endswith("Answer with citations:"):
                words = ["Grease", "it [1].", "Also [2]."]
            limit = request.max_tokens if request.max_tokens is not None else len(words)
            for i, word in enumerate(words[:limit]):
                await asyncio.sleep(0)
                if self.aborted is not None:
                    raise self.aborted
                yield TextDelta(word if i == 0 else " " + word)
            finish = "length" if limit < len(words) else "stop"
            yield Done(finish, Usage(prompt_tokens, min(limit, len(words))), ttft=0.01,
                       prompt_seconds=0.01, decode_seconds=0.02, total_seconds=0.03)
        finally:
            self.running -= 1

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        vectors = []
        for t in texts:
            h = hashlib.sha256(t.encode()).digest()
            vectors.append([b / 255 for b in h[:8]])
        return vectors, sum(len(t) for t in texts)

    @property
    def busy(self) -> int:
        return self.running

    @property
    def queued(self) -> int:
        return 0

    def abort(self, error: BendiError) -> None:
        self.aborted = error

    def close(self, timeout: float = 10.0) -> None:
        self.closed = True


class FakeEngine:
    """Runs every model it is given; keeps what it loaded, for assertions."""

    name = "fake"

    def __init__(self) -> None:
        self.loaded: list[FakeModel] = []

    def accepts(self, record: ModelRecord) -> bool:
        return True

    def load(self, record: ModelRecord, options: LoadOptions) -> FakeModel:
        model = FakeModel(str(record.name), options, record.digest)
        self.loaded.append(model)
        return model


def fake_registry() -> tuple[EngineRegistry, FakeEngine]:
    registry = EngineRegistry()
    engine = FakeEngine()
    registry.register(engine)
    return registry, engine


def fake_services(settings: Settings, engines: EngineRegistry) -> Services:
    """Services on the fake engine, without the bundled model (registering it hashes 135 MB)."""
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    (settings.models_dir / ".bundled-registered").touch()  # as if the user had removed it
    return Services.build(settings, engines=engines)
