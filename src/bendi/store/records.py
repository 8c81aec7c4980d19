"""What the store knows about a model: its name, its manifest, its file, and the facts a GGUF
header gives (what `list`, `show` and the APIs report)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bendi.store.gguf import GGUFInfo, read_gguf
from bendi.store.names import ModelName


@dataclass
class ModelRecord:
    """A name in the store and what its manifest says."""

    name: ModelName
    manifest: dict[str, Any]
    path: Path

    @property
    def digest(self) -> str:
        return str(self.manifest["model"]["digest"])

    @property
    def size(self) -> int:
        return int(self.manifest["model"]["size"])

    @property
    def modified(self) -> float:
        return float(self.manifest.get("modified_at", 0))

    @property
    def details(self) -> dict[str, Any]:
        return dict(self.manifest.get("details", {}))

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.manifest.get("parameters", {}))

    def gguf(self) -> GGUFInfo:
        return read_gguf(self.path)

    @property
    def format(self) -> str:
        """"gguf" (one file) or "safetensors" (a Hugging Face layout directory)."""
        return str(self.details.get("format", "gguf"))

    def facts(self) -> dict[str, Any]:
        """Everything `bendi show` and /api/show report about a model."""
        if self.format != "gguf":
            from bendi.store import hf

            found = hf.facts(self.path)
            return {
                "name": str(self.name), "digest": self.digest, "size": self.size,
                "path": str(self.path), **found,
                "parameter_size": self.details.get("parameter_size"),
                "chat_template": self.manifest.get("template") or found["chat_template"],
                "template_source": "manifest" if self.manifest.get("template") else "tokenizer_config",
                "system": self.manifest.get("system"), "parameters": self.parameters,
                "modified_at": self.modified, "format": self.format,
                "engine": self.manifest.get("engine"),
            }
        info = self.gguf()
        return {
            "name": str(self.name),
            "digest": self.digest,
            "size": self.size,
            "path": str(self.path),
            "architecture": info.architecture,
            "parameter_count": info.parameter_count,
            "parameter_size": self.details.get("parameter_size"),
            "quantization": info.quantization,
            "context_length": info.context_length,
            "embedding_length": info.embedding_length,
            "block_count": info.arch("block_count"),
            "head_count": info.arch("attention.head_count"),
            "head_count_kv": info.arch("attention.head_count_kv"),
            "chat_template": self.manifest.get("template") or info.chat_template,
            "template_source": "manifest" if self.manifest.get("template") else "gguf",
            "system": self.manifest.get("system"),
            "parameters": self.parameters,
            "license": info.get("general.license"),
            "general_name": info.get("general.name"),
            "modified_at": self.modified,
            "provenance": self.manifest.get("provenance"),
            "metadata": {k: v for k, v in info.metadata.items()
                         if not isinstance(v, dict) and k != "tokenizer.chat_template"},
        }


def describe_gguf(info: GGUFInfo) -> dict[str, Any]:
    """The facts about a GGUF file that `list`, `show` and the APIs report."""
    n = info.parameter_count
    return {
        "format": "gguf",
        "architecture": info.architecture,
        "family": info.architecture,
        "parameter_count": n,
        "parameter_size": _human_params(n),
        "quantization_level": info.quantization,
        "context_length": info.context_length,
        "embedding_length": info.embedding_length,
        "block_count": info.arch("block_count"),
        "head_count": info.arch("attention.head_count"),
        "head_count_kv": info.arch("attention.head_count_kv"),
        "general_name": info.get("general.name"),
        "license": info.get("general.license"),
        "has_chat_template": info.chat_template is not None,
        "pooling_type": info.arch("pooling_type"),
    }


def _human_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    return f"{n / 1e6:.0f}M"
