"""Load guard: refuse to load what will not fit, and choose default context lengths.

The model manager calls these two functions with a store record; they read the GGUF header for
the model's shape and ask the memory model. The memory they compare against is the RAM available
now, or the `memory_limit` setting when given (a container limit psutil cannot see, or tests).
"""

from __future__ import annotations

from bendi.errors import InsufficientMemory
from bendi.planner import hardware
from bendi.planner.catalog import CatalogModel, from_gguf, load_catalog
from bendi.planner.machine import SAFETY_MARGIN, Gpu, parse_size
from bendi.planner.memory import MemoryEstimate, estimate, weight_bytes_from_params
from bendi.planner.placement import plan_llama_cpp
from bendi.planner.plan import CPU_CTX_CAP, MIN_CTX
from bendi.store import ModelRecord

GB = 1_000_000_000


def memory_available(limit: str | None = None) -> int:
    """Bytes a model may use now: `limit` (the memory_limit setting) if set, else the RAM available."""
    if limit:
        return parse_size(limit)
    return hardware.available_memory()[1]


def _model(record: ModelRecord) -> tuple[CatalogModel, int]:
    info = record.gguf()
    return from_gguf(str(record.name), info), info.tensor_bytes


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / 1e6:.0f} MB"


def _planned_here(record: ModelRecord) -> bool:
    # The memory model reads a GGUF header; an engine for other formats (vLLM over safetensors)
    # sizes its own memory (--gpu-memory-utilization), so the guard stays out of its way.
    return str(record.details.get("format", "gguf")) == "gguf"


def offload_gpus() -> list[Gpu]:
    """The GPUs the installed llama.cpp can offload to (none on a CPU-only build)."""
    from bendi.runtime.llama.build import planning_gpus

    return list(planning_gpus())


def fit_check(record: ModelRecord, ctx: int, slots: int, *, memory_limit: str | None = None,
              gpus: list[Gpu] | None = None) -> None:
    """Raise InsufficientMemory when `record` at `ctx` x `slots` will not fit in memory.

    With GPUs to offload to (`gpus`, default: those llama.cpp reports), a model that fits the way
    the engine will place it (all on the GPUs, or split with the rest in RAM) is let through.
    """
    if not _planned_here(record):
        return
    model, weights = _model(record)
    est = estimate(model.shape, weights, ctx, slots)
    have = memory_available(memory_limit)
    if est.total <= have:
        return
    gpus = offload_gpus() if gpus is None else gpus
    if gpus and plan_llama_cpp(model, gpus, have, ctx, slots).fits:
        return
    slot_text = f"{slots} slot{'s' if slots != 1 else ''}"
    hint = best_alternative(model, weights, ctx, slots, have)
    raise InsufficientMemory(
        f"{record.name} needs {_gb(est.total)} at {ctx} tokens x {slot_text} "
        f"(weights {_gb(est.weights)}, KV cache {_gb(est.kv_cache)}, buffers {_gb(est.compute + est.overhead)})"
        f" but {_gb(have)} of memory is available; {hint}, or pass --force to load anyway",
        param="model",
    )


def best_alternative(model: CatalogModel, weights: int, ctx: int, slots: int, have: int) -> str:
    """The closest thing that fits: a shorter context, fewer slots, a smaller quantization or model."""
    shape = model.shape
    c = ctx
    while c // 2 >= min(512, ctx):
        c //= 2
        if estimate(shape, weights, c, slots).total <= have:
            return f"try a shorter context (--ctx {c}, needs {_gb(estimate(shape, weights, c, slots).total)})"
    if slots > 1 and estimate(shape, weights, ctx, 1).total <= have:
        return "try fewer concurrent sequences (BENDI_SLOTS=1)"
    for quant in ("Q4_K_M", "Q3_K_M", "Q2_K"):
        smaller = weight_bytes_from_params(shape.params, quant)
        if smaller < weights * 0.9 and estimate(shape, smaller, min(ctx, MIN_CTX), 1).total <= have:
            return f"try a {quant} file of this model (about {_gb(smaller)} of weights)"
    for candidate in sorted(load_catalog(), key=lambda m: m.shape.params, reverse=True):
        w = candidate.gguf_sizes.get("Q4_K_M")
        if w and w < weights and estimate(candidate.shape, w, min(ctx, MIN_CTX), 1).total <= have:
            return f"try a smaller model such as {candidate.name} at Q4_K_M ({_gb(w)})"
    return "nothing in the catalog fits; free memory or use a machine with more"


def choose_context(record: ModelRecord, slots: int, *, memory_limit: str | None = None) -> int:
    """The context length per sequence to use when the user asked for none."""
    if not _planned_here(record):
        return min(int(record.details.get("context_length") or MIN_CTX), CPU_CTX_CAP)
    model, weights = _model(record)
    native = model.native_context
    budget = memory_available(memory_limit) * (1 - SAFETY_MARGIN)
    cap = min(native, CPU_CTX_CAP)
    ctx = cap
    while ctx > MIN_CTX and estimate(model.shape, weights, ctx, slots).total > budget:
        ctx //= 2
    return max(min(ctx, native), min(MIN_CTX, native))


def describe(record: ModelRecord, ctx: int, slots: int) -> MemoryEstimate:
    """The memory estimate for a store model (for `bendi plan` and /api/show)."""
    model, weights = _model(record)
    return estimate(model.shape, weights, ctx, slots)
