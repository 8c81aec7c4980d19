"""The fit planner: which quantization, context, and placement a model gets on some hardware.

Pure functions over numbers: the hardware comes in as a `Hardware` (machine.py: detected or
described with `--gpus`/`--ram`), the model as a `CatalogModel`; placement.py lays out llama.cpp,
vllm_layout.py vLLM, and this module chooses between them and words the verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bendi.planner.catalog import DEFAULT_QUANT, QUANT_ORDER, CatalogModel, estimated_gguf_size
from bendi.planner.machine import GB, Hardware
from bendi.planner.memory import MemoryEstimate, estimate
from bendi.planner.placement import Option, llama_options
from bendi.planner.vllm_layout import vllm_option

#: default context per sequence: long enough for R1's reasoning, short enough for a laptop
CPU_CTX_CAP = 8192
GPU_CTX_CAP = 32768
MIN_CTX = 2048
#: below this share of the budget a fit is "comfortable"
COMFORTABLE = 0.75


@dataclass
class ModelPlan:
    """The verdict for one model on one machine."""

    model: str
    source: str  # catalog | store
    fits: bool
    verdict: str
    recommended: Option | None
    #: the largest llama.cpp quantization that fits at the recommended context
    best_quality: str | None = None
    llama_cpp: Option | None = None
    vllm: Option | None = None
    vllm_note: str | None = None
    notes: list[str] = field(default_factory=list)
    #: the verdict as data ({"kind": comfortable | tight | context | quantization | no_fit, and
    #: the numbers it names}), for a console that says it in the reader's language
    verdict_facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "fits": self.fits,
            "verdict": self.verdict,
            "verdict_facts": self.verdict_facts,
            "recommended": self.recommended.to_dict() if self.recommended else None,
            "best_quality": self.best_quality,
            "llama_cpp": self.llama_cpp.to_dict() if self.llama_cpp else None,
            "vllm": self.vllm.to_dict() if self.vllm else None,
            "vllm_note": self.vllm_note,
            "notes": self.notes,
        }


# -- planning --------------------------------------------------------------------------------

def default_context(model: CatalogModel, on_gpu: bool = False) -> int:
    """The context the planner aims for when none is asked: capped, never above native."""
    return min(model.native_context, GPU_CTX_CAP if on_gpu else CPU_CTX_CAP)


def _contexts(wanted: int, floor: int) -> list[int]:
    out = [wanted]
    c = wanted
    while c // 2 >= floor:
        c //= 2
        out.append(c)
    return out


def _first_fit(options: list[Option]) -> Option | None:
    return next((o for o in options if o.fits), None)


def plan_model(model: CatalogModel, hw: Hardware, ctx: int | None = None, slots: int = 1,
               source: str = "catalog", nodes: int = 1) -> ModelPlan:
    """Best quantization, context and placement for `model` on `hw`, with a plain verdict."""
    notes: list[str] = []
    on_gpu = bool(hw.gpus and hw.gpu_offload)
    wanted = ctx or default_context(model, on_gpu)
    if wanted > model.native_context:
        notes.append(f"context {wanted} is above the model's native {model.native_context}; planned at native")
        wanted = model.native_context
    floor = min(MIN_CTX, wanted)
    if model.installed_quant:
        quants = [model.installed_quant]
    else:
        smaller = QUANT_ORDER[QUANT_ORDER.index(DEFAULT_QUANT):]
        quants = [q for q in smaller if q in model.gguf_sizes] or [DEFAULT_QUANT]
    default_q = quants[0]

    chosen: Option | None = None
    # 1: the default quantization at the wanted context; 2: shorter contexts; 3: smaller quants
    for q in quants:
        for c in _contexts(wanted, floor):
            chosen = _first_fit(llama_options(model, hw, q, c, slots))
            if chosen:
                break
        if chosen:
            break

    best_quality = None
    if chosen:
        for q in QUANT_ORDER:
            if q in model.gguf_sizes and _first_fit(llama_options(model, hw, q, chosen.ctx, slots)):
                best_quality = q
                break

    vllm, vllm_note = (None, None)
    if hw.discrete_gpus:
        vllm, why = vllm_option(model, hw, wanted if ctx else min(model.native_context, GPU_CTX_CAP),
                                nodes=nodes)
        vllm_note = why or None

    recommended = chosen
    if vllm is not None and (len(hw.discrete_gpus) > 1 or nodes > 1 or chosen is None):
        recommended = vllm  # several GPUs: vLLM's batching and tensor parallelism serve a team better

    if recommended is None:
        need = llama_options(model, hw, default_q, floor, slots)
        smallest = min(need, key=lambda o: o.memory - o.budget)
        have = _raw_capacity(hw, smallest.target)
        verdict = f"does not fit: needs {_gb(smallest.memory)}, you have {_gb(have)}"
        facts = {"kind": "no_fit", "target": smallest.target, "memory": smallest.memory, "have": have}
        return ModelPlan(model.name, source, False, verdict, None, None, None, None, vllm_note, notes, facts)

    verdict, facts = _verdict(recommended, default_q, wanted)
    return ModelPlan(model.name, source, True, verdict, recommended, best_quality, chosen, vllm,
                     vllm_note, notes, facts)


def _gb(n: float) -> str:
    return f"{n / GB:.0f} GB" if n >= 100 * GB else f"{n / GB:.1f} GB"


def _raw_capacity(hw: Hardware, target: str) -> int:
    if target == "gpu":
        return sum(g.memory for g in hw.gpus)
    if target == "split":
        return sum(g.memory for g in hw.gpus) + hw.ram
    return hw.ram


def _verdict(option: Option, default_q: str, wanted: int) -> tuple[str, dict[str, Any]]:
    """The verdict in words, and as facts."""
    where = {"cpu": "on CPU", "gpu": "fully on GPU", "split": f"split, {option.gpu_layers} layers on GPU",
             "vllm": f"vLLM {option.detail.get('layout', '')} at {option.quantization}"}[option.target]
    facts: dict[str, Any] = {"target": option.target, "gpu_layers": option.gpu_layers, "layout": option.detail.get("layout"),
                             "quantization": option.quantization, "ctx": option.ctx, "memory": option.memory,
                             "budget": option.budget}
    if option.target != "vllm":
        if option.quantization != default_q:
            short = f", {option.ctx // 1024}k context" if option.ctx < wanted else ""
            return (f"fits at {option.quantization}{short} only ({where})",
                    {"kind": "quantization", "short_context": option.ctx < wanted, **facts})
        if option.ctx < wanted:
            return f"fits with {option.ctx // 1024}k context only ({where})", {"kind": "context", **facts}
    if option.memory <= COMFORTABLE * option.budget:
        return f"fits comfortably ({where})", {"kind": "comfortable", **facts}
    return (f"fits, tight: {option.memory / GB:.1f} of {option.budget / GB:.1f} GB ({where})",
            {"kind": "tight", **facts})


def plan_models(models: list[tuple[CatalogModel, str]], hw: Hardware, ctx: int | None = None,
                slots: int = 1, nodes: int = 1) -> list[ModelPlan]:
    """Plans for several (model, source) pairs; `nodes` machines like `hw` for vLLM."""
    return [plan_model(m, hw, ctx, slots, source, nodes) for m, source in models]


def estimate_for(model: CatalogModel, quant: str, ctx: int, slots: int = 1) -> MemoryEstimate:
    """CPU memory estimate of a catalog model at a quantization."""
    return estimate(model.shape, estimated_gguf_size(model, quant), ctx, slots)
