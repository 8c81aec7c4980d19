"""Embeddings through the same path as generation: a bundled sentence model (multilingual-e5-small,
or the English-only all-MiniLM) or a store model, one acquire/release, one observation per request."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from bendi.core.context import RequestContext
from bendi.core.observe import Observers, Tracker
from bendi.errors import InvalidRequest
from bendi.kb.embed import BUNDLED_ALIASES, BUNDLED_EMBED, E5Embedder, MiniLMEmbedder, bundled_name
from bendi.runtime.manager import ModelManager
from bendi.store import ModelStore


@dataclass
class Embedded:
    vectors: list[list[float]]
    tokens: int
    #: the model that embedded (its full name; the alias as given for the bundled model)
    model: str


class EmbeddingService:
    """Vectors from the bundled models (each loaded once, shared) or a model in the store."""

    def __init__(self, store: ModelStore, models: ModelManager, observers: Observers) -> None:
        self.store = store
        self.models = models
        self.observers = observers
        self._lock = threading.Lock()
        self._bundled: E5Embedder | None = None
        self._minilm: MiniLMEmbedder | None = None

    def bundled(self) -> E5Embedder:
        """The default embedding model: multilingual-e5-small (reads Chinese)."""
        with self._lock:
            if self._bundled is None:
                self._bundled = E5Embedder()
            return self._bundled

    def minilm(self) -> MiniLMEmbedder:
        """all-MiniLM-L6-v2, the English-only model of the first version."""
        with self._lock:
            if self._minilm is None:
                self._minilm = MiniLMEmbedder()
            return self._minilm

    def vectors(self, model: str, texts: list[str], *, keep_alive: float | None = None) -> Embedded:
        """Embed with `model` (blocking). Knowledge bases call this for their own chunks and
        queries; requests from clients go through `embed`, which also observes them."""
        if model in BUNDLED_ALIASES:
            bundled = self.bundled() if bundled_name(model) == BUNDLED_EMBED else self.minilm()
            vectors, tokens = bundled.embed_with_tokens(texts)
            return Embedded(vectors, tokens, model)
        loaded = self.models.acquire(model, keep_alive=keep_alive)
        try:
            if not loaded.model.capabilities.embeddings:
                raise InvalidRequest(f"model {loaded.name} cannot make embeddings", param="model")
            vectors, tokens = loaded.model.embed(texts)
        finally:
            self.models.release(loaded, keep_alive)
        return Embedded(vectors, tokens, loaded.name)

    def embed(self, model: str, texts: list[str], context: RequestContext, *,
              keep_alive: float | None = None) -> Embedded:
        """A client's embedding request: admitted, run, recorded."""
        name = model if model in BUNDLED_ALIASES else str(self.store.get(model).name)
        tracker = Tracker(self.observers, context, "embedding", name, prompt=texts)
        with tracker.observing():
            result = self.vectors(name, texts, keep_alive=keep_alive)
            tracker.prompt_tokens = result.tokens
        return result

    async def aembed(self, model: str, texts: list[str], context: RequestContext, *,
                     keep_alive: float | None = None) -> Embedded:
        return await asyncio.to_thread(self.embed, model, texts, context, keep_alive=keep_alive)
