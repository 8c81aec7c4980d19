"""Which embedder a knowledge base uses: the bundled sentence model, or a GGUF embedding model
from the store run through the model manager."""

from __future__ import annotations

import threading
from collections.abc import Callable

from bendi.kb.embed import BUNDLED_ALIASES, BUNDLED_EMBED, Embedder, GGUFEmbedder, MiniLMEmbedder
from bendi.runtime.manager import ModelManager
from bendi.store import ModelStore


class Embedders:
    """Makes embedders by name; the bundled model is loaded once and shared."""

    def __init__(self, store: ModelStore, models: ModelManager) -> None:
        self.store = store
        self.models = models
        self._lock = threading.Lock()
        self._minilm: MiniLMEmbedder | None = None

    def bundled(self) -> MiniLMEmbedder:
        with self._lock:
            if self._minilm is None:
                self._minilm = MiniLMEmbedder()
            return self._minilm

    def named(self, embed: str) -> Embedder:
        """The embedder called `embed`: the bundled model or a store model (ModelNotFound if absent)."""
        if embed == BUNDLED_EMBED:
            return self.bundled()
        record = self.store.get(embed)
        model_name = str(record.name)

        def run(texts: list[str]) -> tuple[list[list[float]], int]:
            loaded = self.models.acquire(model_name)
            try:
                return loaded.model.embed(texts)
            finally:
                self.models.release(loaded)

        dim = int(record.details.get("embedding_length") or 0)
        return GGUFEmbedder(model_name, run, dim)

    def for_model(self, model: str) -> Callable[[list[str]], tuple[list[list[float]], int]] | None:
        """For /v1/embeddings: the bundled model when `model` names it, else None (use the store)."""
        if model in BUNDLED_ALIASES:
            return self.bundled().embed_with_tokens
        return None
