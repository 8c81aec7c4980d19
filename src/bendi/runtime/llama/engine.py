"""The llama.cpp engine as the registry sees it: GGUF models, loaded in process."""

from __future__ import annotations

from bendi.runtime.engine import LoadedModel, LoadOptions
from bendi.store import ModelRecord


class LlamaCppEngine:
    """GGUF models through llama.cpp, in process."""

    name = "llama.cpp"

    def accepts(self, record: ModelRecord) -> bool:
        return record.manifest.get("details", {}).get("format", "gguf") == "gguf"

    def load(self, record: ModelRecord, options: LoadOptions) -> LoadedModel:
        from bendi.runtime.llama.model import LlamaModel

        return LlamaModel(record.path, options, name=str(record.name))
