"""Which embedder a knowledge base uses: the bundled sentence model, or a GGUF embedding model
from the store. Vectors come from the embedding service (bendi.core), which owns the bundled
model and loads store models through the one acquire/release path."""

from __future__ import annotations

from typing import Protocol

from bendi.kb.embed import BUNDLED_EMBED, Embedder, GGUFEmbedder, MiniLMEmbedder
from bendi.store import ModelStore


class Vectors(Protocol):
    vectors: list[list[float]]
    tokens: int


class VectorSource(Protocol):
    """Where vectors come from (bendi.core.embeddings.EmbeddingService)."""

    def bundled(self) -> MiniLMEmbedder: ...

    def vectors(self, model: str, texts: list[str], *, keep_alive: float | None = None) -> Vectors: ...


class Embedders:
    """Makes embedders by name."""

    def __init__(self, store: ModelStore, source: VectorSource) -> None:
        self.store = store
        self.source = source

    def bundled(self) -> MiniLMEmbedder:
        return self.source.bundled()

    def named(self, embed: str) -> Embedder:
        """The embedder called `embed`: the bundled model or a store model (ModelNotFound if absent)."""
        if embed == BUNDLED_EMBED:
            return self.bundled()
        record = self.store.get(embed)
        model_name = str(record.name)

        def run(texts: list[str]) -> tuple[list[list[float]], int]:
            result = self.source.vectors(model_name, texts)
            return result.vectors, result.tokens

        dim = int(record.details.get("embedding_length") or 0)
        return GGUFEmbedder(model_name, run, dim)
