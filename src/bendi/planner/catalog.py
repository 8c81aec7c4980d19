"""The DeepSeek family catalog (catalog.json) and imported models, as plannable entries."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from bendi.planner.memory import ModelShape, weight_bytes_from_params
from bendi.store.gguf import GGUFInfo

GB = 1_000_000_000

#: llama.cpp quantizations from best quality to smallest; F16 is listed for completeness
QUANT_ORDER = ["F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"]
#: the usual default: close to Q8_0 in quality at ~57% of its bytes, so ~1.7x faster decode
DEFAULT_QUANT = "Q4_K_M"


@dataclass
class CatalogModel:
    """A model the planner can reason about: its shape and its size per quantization."""

    name: str
    architecture: str
    shape: ModelShape
    native_context: int
    #: GGUF weight bytes per llama.cpp quantization
    gguf_sizes: dict[str, int]
    #: safetensors checkpoint bytes per precision, for vLLM (BF16, FP8)
    hf_sizes: dict[str, int] = field(default_factory=dict)
    hf_repo: str | None = None
    source: str = ""
    aliases: list[str] = field(default_factory=list)
    #: set for models in the store: the quantization of the file on disk
    installed_quant: str | None = None

    @property
    def is_moe(self) -> bool:
        return bool(self.shape.active_params) and self.shape.active_params < self.shape.params

    def matches(self, name: str) -> bool:
        """True for the exact name or an alias; a bare family ("deepseek-r1") matches every size."""
        wanted = name.lower()
        names = [self.name, *self.aliases]
        if self.hf_repo:
            names.append(self.hf_repo.split("/")[-1].lower())
        if ":" in wanted or "/" in wanted:
            return wanted.split("/")[-1] in names
        return wanted in names or any(n.split(":")[0] == wanted for n in names)


def _shape(entry: dict[str, Any]) -> ModelShape:
    mla = entry.get("mla") or {}
    params = int(float(entry["params_b"]) * 1e9)
    active = int(float(entry.get("active_params_b", 0)) * 1e9)
    return ModelShape(
        layers=int(entry["layers"]),
        heads=int(entry["heads"]),
        kv_heads=int(entry["kv_heads"]),
        head_dim=int(entry["head_dim"]),
        embd=int(entry.get("embd", 0)),
        ff=int(entry.get("ff", 0)),
        vocab=int(entry.get("vocab", 0)),
        mla_latent=int(mla.get("kv_lora_rank", 0)) + int(mla.get("qk_rope_head_dim", 0)),
        active_params=active,
        params=params,
    )


def parse_catalog(data: dict[str, Any]) -> list[CatalogModel]:
    """Catalog entries from the parsed JSON document."""
    models = []
    for entry in data["models"]:
        models.append(CatalogModel(
            name=entry["name"],
            architecture=entry["architecture"],
            shape=_shape(entry),
            native_context=int(entry["native_context"]),
            gguf_sizes={q: int(float(v) * GB) for q, v in entry.get("gguf_sizes_gb", {}).items()},
            hf_sizes={q: int(float(v) * GB) for q, v in entry.get("hf_sizes_gb", {}).items()},
            hf_repo=entry.get("hf_repo"),
            source=entry.get("source", ""),
            aliases=list(entry.get("aliases", [])),
        ))
    return models


def load_catalog() -> list[CatalogModel]:
    """The DeepSeek family as shipped in bendi/planner/catalog.json."""
    text = resources.files("bendi.planner").joinpath("catalog.json").read_text(encoding="utf-8")
    return parse_catalog(json.loads(text))


def from_gguf(name: str, info: GGUFInfo) -> CatalogModel:
    """A plannable entry for a GGUF file, from its header alone."""
    arch = info.architecture
    heads = int(info.arch("attention.head_count", 0) or 0)
    if isinstance(info.arch("attention.head_count"), list):  # per-layer lists (some archs)
        heads = max(info.arch("attention.head_count"))
    kv = info.arch("attention.head_count_kv", heads)
    kv_heads = max(kv) if isinstance(kv, list) else int(kv or heads)
    embd = int(info.arch("embedding_length", 0) or 0)
    key_len = info.arch("attention.key_length")
    head_dim = int(key_len) if key_len else (embd // heads if heads else 0)
    ff = info.arch("feed_forward_length", 0) or 0
    ff = max(ff) if isinstance(ff, list) else int(ff)
    vocab = info.arch("vocab_size")
    if vocab is None:
        tokens = info.get("tokenizer.ggml.tokens")
        vocab = tokens.get("count", 0) if isinstance(tokens, dict) else len(tokens or [])
    lora = int(info.arch("attention.kv_lora_rank", 0) or 0)
    rope = int(info.arch("rope.dimension_count", 0) or 0)
    params = info.parameter_count
    n_expert = int(info.arch("expert_count", 0) or 0)
    used = int(info.arch("expert_used_count", 0) or 0)
    active = 0
    if n_expert and used:
        expert_params = sum(t.n_elements for t in info.tensors if "_exps" in t.name)
        active = params - expert_params + expert_params * used // n_expert
    shape = ModelShape(
        layers=int(info.arch("block_count", 0) or 0),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        embd=embd,
        ff=ff,
        vocab=int(vocab or 0),
        mla_latent=lora + rope if lora else 0,
        active_params=active,
        params=params,
    )
    quant = info.quantization
    return CatalogModel(
        name=name,
        architecture=arch,
        shape=shape,
        native_context=info.context_length or 4096,
        gguf_sizes={quant: info.tensor_bytes},
        source=f"GGUF header of {info.path.name}",
        installed_quant=quant,
    )


def estimated_gguf_size(model: CatalogModel, quant: str) -> int:
    """The catalog's size for `quant`, or one derived from the parameter count."""
    if quant in model.gguf_sizes:
        return model.gguf_sizes[quant]
    return weight_bytes_from_params(model.shape.params, quant)
