"""Which embedder a knowledge base uses: a bundled model (multilingual-e5-small by default, or
the English-only all-MiniLM of the first version), or a GGUF embedding model from the store.
Vectors come from the embedding service (bendi.core), which owns the bundled models and loads
store models through the one acquire/release path."""

from __future__ import annotations

from typing import Protocol

from bendi.kb.embed import (
    BUNDLED_EMBED,
    MINILM_EMBED,
    E5Embedder,
    Embedder,
    GGUFEmbedder,
    MiniLMEmbedder,
)
from bendi.store import ModelStore


class Vectors(Protocol):
    vectors: list[list[float]]
    tokens: int


class VectorSource(Protocol):
    """Where vectors come from (bendi.core.embeddings.EmbeddingService)."""

    def bundled(self) -> E5Embedder: ...

    def minilm(self) -> MiniLMEmbedder: ...

    def vectors(self, model: str, texts: list[str], *, keep_alive: float | None = None) -> Vectors: ...


class Embedders:
    """Makes embedders by name."""

    def __init__(self, store: ModelStore, source: VectorSource) -> None:
        self.store = store
        self.source = source

    def bundled(self) -> E5Embedder:
        """The default embedder: multilingual-e5-small (reads Chinese)."""
        return self.source.bundled()

    def minilm(self) -> MiniLMEmbedder:
        return self.source.minilm()

    def named(self, embed: str) -> Embedder:
        """The embedder called `embed`: a bundled model or a store model (ModelNotFound if absent)."""
        if embed == BUNDLED_EMBED:
            return self.bundled()
        if embed == MINILM_EMBED:
            return self.minilm()
        record = self.store.get(embed)
        model_name = str(record.name)

        def run(texts: list[str]) -> tuple[list[list[float]], int]:
            result = self.source.vectors(model_name, texts)
            return result.vectors, result.tokens

        dim = int(record.details.get("embedding_length") or 0)
        return GGUFEmbedder(model_name, run, dim)
