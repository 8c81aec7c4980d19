"""The memory model: how many bytes a model needs at a context length. Pure functions over numbers.

A llama.cpp model in memory is four things:

- weights: the GGUF tensor data, memory-mapped; every page is touched on the first token, so all
  of it becomes resident;
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x context x slots x bytes per element,
  allocated and cleared at load, so resident at once; DeepSeek's MLA caches one compressed latent
  (kv_lora_rank + rope dims) per token and layer instead of K and V;
- compute buffer: intermediate tensors of one batch (n_ubatch tokens);
- runtime overhead: tokenizer tables, graph metadata, thread pool, the Python side.

Calibration (bundled SmolLM2-135M Q4_1, 30 layers, 3 KV heads x 64, vocab 49152, this x86 box,
llama-cpp-python 0.3.36, flash attention auto = on):

- KV: llama.cpp logs 180.00 MiB at 8192 cells, exactly the formula; RSS grows by that much.
- weights: RSS grows by the GGUF tensor bytes (96.6 MB) after the first token.
- compute: llama.cpp *reserves* ~100 MiB, almost all of it the worst-case logits of a full
  ubatch (n_ubatch x n_vocab x 4 bytes). bendi asks for logits of one token per sequence, so on
  the CPU those pages are never touched: after a 900-token prompt RSS had grown ~19 MB beyond
  weights + KV + overhead, which matches n_ubatch x (3 n_ff + 6 n_embd) x 4 bytes (16.5 MB) plus
  the real logits. On a GPU the reservation is allocated eagerly and counts in full.
- overhead: loading only the vocabulary grows RSS by 17 MB (~350 bytes per token: strings,
  merges, maps); the context and Python objects add ~3 MB more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: bytes per KV cache element, at ggml's true block sizes (q8_0: 34 bytes per 32, q4_0: 18 per 32)
KV_BYTES: dict[str, float] = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}

#: approximate bits per weight of llama.cpp's quantization mixes (whole-file averages for
#: dense 7-70B models; used only when neither a GGUF file nor the catalog gives a size)
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69,
    "Q5_K_S": 5.54, "Q5_0": 5.5, "Q5_1": 6.0, "Q4_K_M": 4.89, "Q4_K_S": 4.58, "Q4_0": 4.5,
    "Q4_1": 5.0, "IQ4_XS": 4.25, "Q3_K_L": 4.27, "Q3_K_M": 3.91, "Q3_K_S": 3.5, "Q2_K": 3.0,
    "FP8": 8.0,
}

#: llama.cpp's default micro-batch (bendi's LoadOptions.batch_tokens)
N_UBATCH = 512
#: fixed part of the runtime overhead: context bookkeeping, threads, Python objects (measured ~3 MB)
OVERHEAD_FIXED = 4 * 1024 * 1024
#: per-vocabulary-entry part: llama.cpp's tokenizer tables (measured ~350 bytes per token)
OVERHEAD_PER_VOCAB = 350
#: a CUDA/ROCm context with cuBLAS workspaces costs this much device memory per GPU
GPU_CONTEXT_BYTES = 500 * 1024 * 1024


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers the memory model needs."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    embd: int = 0
    ff: int = 0
    vocab: int = 0
    #: MLA (DeepSeek-V2/V3): cached latent per token and layer (kv_lora_rank + rope dims); 0 = MHA/GQA
    mla_latent: int = 0
    #: parameters read per generated token (MoE: the active ones); 0 = all of them
    active_params: int = 0
    params: int = 0

    def kv_elements_per_token(self) -> int:
        """K and V elements one token adds to the cache, over all layers."""
        if self.mla_latent:
            # llama.cpp and vLLM keep only the latent (V is a view of it), one vector per layer
            return self.layers * self.mla_latent
        return 2 * self.layers * self.kv_heads * self.head_dim


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a loaded model needs, by part."""

    weights: int
    kv_cache: int
    compute: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.overhead

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def kv_cache_bytes(shape: ModelShape, ctx: int, slots: int = 1, kv_type: str = "f16") -> int:
    """KV cache size: elements per token x context x slots x bytes per element."""
    if kv_type not in KV_BYTES:
        raise ValueError(f"unknown KV cache type {kv_type!r}; known: {', '.join(KV_BYTES)}")
    return int(shape.kv_elements_per_token() * ctx * slots * KV_BYTES[kv_type])


def weight_bytes_from_params(params: int, quantization: str) -> int:
    """Weight bytes of a model with `params` parameters at a quantization (an approximation)."""
    bits = BITS_PER_WEIGHT.get(quantization.upper())
    if bits is None:
        raise ValueError(f"unknown quantization {quantization!r}")
    return int(params * bits / 8)


def compute_bytes(shape: ModelShape, slots: int = 1, n_ubatch: int = N_UBATCH, *, gpu: bool = False) -> int:
    """Compute buffer: what gets touched on a CPU, or what llama.cpp reserves on a GPU."""
    if gpu:
        # llama.cpp reserves the worst case, logits of a full ubatch included, and GPU memory
        # is committed when allocated
        return 4 * n_ubatch * (shape.vocab + shape.ff + 4 * shape.embd)
    # intermediates of one ubatch (FFN up/gate/act, attention in/out, norms) plus one row of
    # logits per sequence: measured, see the module docstring
    return 4 * n_ubatch * (3 * shape.ff + 6 * shape.embd) + 4 * slots * shape.vocab


def overhead_bytes(shape: ModelShape) -> int:
    """Tokenizer tables and fixed runtime bookkeeping."""
    return OVERHEAD_FIXED + OVERHEAD_PER_VOCAB * shape.vocab


def estimate(shape: ModelShape, weights: int, ctx: int, slots: int = 1, *,
             kv_type: str = "f16", n_ubatch: int = N_UBATCH, gpu: bool = False) -> MemoryEstimate:
    """Memory for a llama.cpp model with `weights` bytes of tensors at `ctx` tokens x `slots`."""
    return MemoryEstimate(
        weights=int(weights),
        kv_cache=kv_cache_bytes(shape, ctx, slots, kv_type),
        compute=compute_bytes(shape, slots, n_ubatch, gpu=gpu),
        overhead=overhead_bytes(shape),
    )


def bytes_per_token(shape: ModelShape, weights: int, ctx: int, kv_type: str = "f16") -> int:
    """Bytes read from memory to generate one token: the (active) weights and the KV so far."""
    if shape.active_params and shape.params:
        weights = int(weights * shape.active_params / shape.params)
    return weights + kv_cache_bytes(shape, ctx, 1, kv_type)


def decode_tokens_per_second(bytes_read: int, bandwidth: float) -> float:
    """Estimated decode speed: memory bandwidth (bytes/s) / bytes read per token."""
    return bandwidth / bytes_read if bytes_read > 0 else 0.0
