"""The fit planner: which quantization, context, and placement a model gets on some hardware.

Pure functions over numbers: the hardware comes in as a `Hardware` (detected or described with
`--gpus`/`--ram`), the model as a `CatalogModel`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bendi.errors import InvalidRequest
from bendi.planner.catalog import DEFAULT_QUANT, QUANT_ORDER, CatalogModel, estimated_gguf_size
from bendi.planner.hardware import GPU_MEMORY, gpu_bandwidth
from bendi.planner.memory import (
    GPU_CONTEXT_BYTES,
    MemoryEstimate,
    bytes_per_token,
    decode_tokens_per_second,
    estimate,
)

GB = 1_000_000_000
#: share of memory the planner leaves free: the OS, other programs, estimate error
SAFETY_MARGIN = 0.10
#: vLLM's default --gpu-memory-utilization
VLLM_GPU_UTILIZATION = 0.90
#: vLLM activations, CUDA graphs and NCCL buffers per GPU, outside weights and KV cache
VLLM_RESERVE = 3 * GB
#: default context per sequence: long enough for R1's reasoning, short enough for a laptop
CPU_CTX_CAP = 8192
GPU_CTX_CAP = 32768
MIN_CTX = 2048
#: below this share of the budget a fit is "comfortable"
COMFORTABLE = 0.75

#: GPU memory size (GB) -> the common accelerator of that size, to guess bandwidth for `--gpus NxSIZE`
_TYPICAL_GPU = {24: "rtx 4090", 32: "rtx 5090", 48: "l40s", 40: "a100", 64: "910b", 80: "h100",
                96: "h20", 141: "h200", 192: "mi300x"}


@dataclass
class Gpu:
    name: str
    memory: int  # bytes usable by a model (free memory when detected)
    bandwidth: float | None = None  # bytes/s
    unified: bool = False  # shares memory with the CPU (Apple silicon)


@dataclass
class Hardware:
    """What the planner plans for: RAM for llama.cpp on CPU, and accelerators."""

    ram: int
    gpus: list[Gpu] = field(default_factory=list)
    cpu_bandwidth: float | None = None
    #: "detected" (this machine, available memory) or "given" (--ram/--gpus)
    origin: str = "detected"
    #: whether the llama.cpp build can offload to these GPUs (a hypothetical machine: assume yes)
    gpu_offload: bool = True

    @property
    def ram_budget(self) -> int:
        return int(self.ram * (1 - SAFETY_MARGIN))

    @property
    def discrete_gpus(self) -> list[Gpu]:
        return [g for g in self.gpus if not g.unified]

    @property
    def gpu_budget(self) -> int:
        usable = [g for g in self.gpus if self.gpu_offload]
        # Metal lets the GPU wire about three quarters of unified memory by default
        return sum(int(g.memory * (0.75 if g.unified else 1 - SAFETY_MARGIN)) for g in usable)


@dataclass
class Option:
    """One way to run a model: engine, placement, quantization, context, and its cost."""

    target: str  # cpu | gpu | split | vllm
    engine: str
    quantization: str
    ctx: int
    slots: int
    memory: int  # bytes needed (on the placement's devices)
    budget: int  # bytes usable there
    tokens_per_second: float | None = None
    gpu_layers: int | None = None
    tensor_parallel: int | None = None
    pipeline_parallel: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return self.memory <= self.budget

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fits"] = self.fits
        if self.tokens_per_second is not None:
            data["tokens_per_second"] = round(self.tokens_per_second, 1)
        return data


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "fits": self.fits,
            "verdict": self.verdict,
            "recommended": self.recommended.to_dict() if self.recommended else None,
            "best_quality": self.best_quality,
            "llama_cpp": self.llama_cpp.to_dict() if self.llama_cpp else None,
            "vllm": self.vllm.to_dict() if self.vllm else None,
            "vllm_note": self.vllm_note,
            "notes": self.notes,
        }


# -- parsing ------------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    """'64GB', '24G', '512MiB', '1.5TB' -> bytes (GB = 10^9, GiB = 2^30)."""
    m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)(i?)b?\s*", text.lower())
    if not m:
        raise InvalidRequest(f"cannot read {text!r} as a size; write it like 64GB or 512MiB")
    value = float(m.group(1))
    power = " kmgt".index(m.group(2) or " ")
    base = 1024 if m.group(3) else 1000
    if not m.group(2):  # a bare number: gigabytes, the unit people mean here
        power, base = 3, 1000
    return int(value * base**power)


def parse_gpus(text: str) -> list[Gpu]:
    """'4x24GB', '8xH200', '2x80GB,1x24GB' -> GPUs with memory and a bandwidth guess."""
    gpus: list[Gpu] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(?:(\d+)\s*[x×*]\s*)?(.+?)\s*", part, re.I)
        if not m:
            raise InvalidRequest(f"cannot read GPUs {part!r}; write them like 4x24GB or 8xH200")
        count = int(m.group(1) or 1)
        spec = m.group(2).lower().replace("-", " ")
        if spec in GPU_MEMORY:
            name, memory, bw = spec.upper(), GPU_MEMORY[spec], gpu_bandwidth(spec)
        else:
            memory = parse_size(spec)
            typical = _TYPICAL_GPU.get(round(memory / GB))
            name = f"{round(memory / GB)} GB GPU"
            bw = gpu_bandwidth(typical) if typical else None
        if count < 1 or memory <= 0:
            raise InvalidRequest(f"GPUs {part!r}: need a positive count and size")
        gpus.extend(Gpu(name, memory, bw) for _ in range(count))
    return gpus


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


def llama_options(model: CatalogModel, hw: Hardware, quant: str, ctx: int, slots: int) -> list[Option]:
    """Every llama.cpp placement of `model` at `quant`/`ctx` on `hw`, best first."""
    weights = estimated_gguf_size(model, quant)
    shape = model.shape
    options = []
    per_token = bytes_per_token(shape, weights, ctx)
    gpu_budget = hw.gpu_budget
    unified = any(g.unified for g in hw.gpus)
    if hw.gpus and hw.gpu_offload:
        est = estimate(shape, weights, ctx, slots, gpu=True)
        need = est.total + GPU_CONTEXT_BYTES * len(hw.discrete_gpus)
        # layers run one GPU after another, so one GPU's bandwidth sets the pace
        bw = min((g.bandwidth or 0) for g in hw.gpus) or None
        options.append(Option("gpu", "llama.cpp", quant, ctx, slots, need, gpu_budget,
                              decode_tokens_per_second(per_token, bw) if bw else None,
                              gpu_layers=shape.layers, detail={"memory": est.to_dict()}))
        if not unified and need > gpu_budget:
            cpu_est = estimate(shape, weights, ctx, slots)
            on_gpu = max(0.0, (gpu_budget - est.compute - GPU_CONTEXT_BYTES * len(hw.discrete_gpus))
                         / max(1, weights + est.kv_cache))
            layers = min(shape.layers - 1, int(on_gpu * shape.layers))
            if layers > 0:
                frac = layers / shape.layers
                speed = None
                if bw and hw.cpu_bandwidth:
                    seconds = per_token * frac / bw + per_token * (1 - frac) / hw.cpu_bandwidth
                    speed = 1 / seconds
                options.append(Option(
                    "split", "llama.cpp", quant, ctx, slots, cpu_est.total,
                    gpu_budget + hw.ram_budget, speed, gpu_layers=layers,
                    detail={"memory": cpu_est.to_dict(), "gpu_share": round(frac, 2)}))
    if not unified:
        est = estimate(shape, weights, ctx, slots)
        options.append(Option("cpu", "llama.cpp", quant, ctx, slots, est.total, hw.ram_budget,
                              decode_tokens_per_second(per_token, hw.cpu_bandwidth)
                              if hw.cpu_bandwidth else None, gpu_layers=0,
                              detail={"memory": est.to_dict()}))
    return options


def _first_fit(options: list[Option]) -> Option | None:
    return next((o for o in options if o.fits), None)


def valid_tp_sizes(heads: int, n_gpus: int) -> list[int]:
    """Tensor-parallel sizes vLLM accepts: powers of two up to n_gpus that divide the heads."""
    sizes, tp = [], 1
    while tp <= n_gpus:
        if heads % tp == 0:
            sizes.append(tp)
        tp *= 2
    return sizes


def vllm_option(model: CatalogModel, hw: Hardware, ctx: int) -> tuple[Option | None, str]:
    """The smallest vLLM tensor-parallel deployment that fits, or why there is none."""
    gpus = hw.discrete_gpus
    if not gpus:
        return None, "vLLM needs NVIDIA/AMD/Ascend/Moore Threads GPUs"
    if not model.hf_sizes:
        return None, "vLLM serves safetensors checkpoints; this model is only known as a GGUF file"
    precision = "FP8" if "FP8" in model.hf_sizes else "BF16"
    weights = model.hf_sizes[precision]
    shape = model.shape
    per_gpu = min(g.memory for g in gpus) * VLLM_GPU_UTILIZATION
    sizes = valid_tp_sizes(shape.heads, len(gpus))

    def kv_per_token(tp: int) -> int:
        if shape.mla_latent:
            return shape.layers * shape.mla_latent * 2  # the latent is replicated on every rank
        kv_heads = max(1, shape.kv_heads // tp)  # fewer KV heads than ranks: vLLM replicates them
        return 2 * shape.layers * kv_heads * shape.head_dim * 2

    # tensor parallelism alone first (smallest TP that fits: fewer all-reduces), then pipeline
    # stages over all GPUs when the heads forbid a large enough TP
    layouts = [(tp, 1) for tp in sizes]
    layouts += [(tp, len(gpus) // tp) for tp in reversed(sizes)
                if tp * (len(gpus) // tp) == len(gpus) and len(gpus) // tp > 1]
    for tp, pp in layouts:
        ranks = tp * pp
        free_for_kv = per_gpu - weights / ranks - VLLM_RESERVE
        need_kv = kv_per_token(tp) * ctx / pp
        if free_for_kv >= need_kv:
            bw = min((g.bandwidth or 0) for g in gpus) or None
            active = weights * (shape.active_params / shape.params if model.is_moe else 1.0)
            # ranks of one pipeline stage read their shards in parallel; stages run in turn
            speed = tp * bw / active if bw else None
            capacity = int(free_for_kv * pp / kv_per_token(tp))
            layout = f"TP={tp}" + (f" x PP={pp}" if pp > 1 else "")
            command = (f"vllm serve {model.hf_repo} --tensor-parallel-size {tp}"
                       + (f" --pipeline-parallel-size {pp}" if pp > 1 else "")
                       + f" --max-model-len {ctx} --gpu-memory-utilization {VLLM_GPU_UTILIZATION}"
                       + " --reasoning-parser deepseek_r1"
                       + (" --trust-remote-code" if shape.mla_latent else ""))
            option = Option("vllm", "vllm", precision, ctx, 1, int(weights / ranks + need_kv + VLLM_RESERVE),
                            int(per_gpu), speed, tensor_parallel=tp, pipeline_parallel=pp,
                            detail={"layout": layout, "weights_per_gpu": int(weights / ranks),
                                    "kv_tokens_capacity": capacity, "command": command,
                                    "valid_tp_sizes": sizes})
            note = ""
            if tp * pp < len(gpus):
                note = (f"uses {tp * pp} of {len(gpus)} GPUs; run {len(gpus) // (tp * pp)} replicas "
                        "behind one endpoint for more throughput")
            return option, note
    total = per_gpu * len(gpus)
    reason = (f"needs {weights / GB:.0f} GB of {precision} weights plus KV cache and "
              f"{VLLM_RESERVE / GB:.0f} GB per GPU for activations; {len(gpus)} x "
              f"{min(g.memory for g in gpus) / GB:.0f} GB x {VLLM_GPU_UTILIZATION} = {total / GB:.0f} GB usable")
    if len(gpus) not in sizes and len(gpus) > 1:
        reason += (f"; tensor parallelism must divide the {shape.heads} attention heads, so with "
                   f"{len(gpus)} GPUs TP can be {', '.join(map(str, sizes))}")
    return None, reason


def plan_model(model: CatalogModel, hw: Hardware, ctx: int | None = None, slots: int = 1,
               source: str = "catalog") -> ModelPlan:
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
        vllm, why = vllm_option(model, hw, wanted if ctx else min(model.native_context, GPU_CTX_CAP))
        vllm_note = why or None

    recommended = chosen
    if vllm is not None and len(hw.discrete_gpus) > 1:
        recommended = vllm  # several GPUs: vLLM's batching and tensor parallelism serve a team better

    if recommended is None:
        need = llama_options(model, hw, default_q, floor, slots)
        smallest = min(need, key=lambda o: o.memory - o.budget)
        have = _raw_capacity(hw, smallest.target)
        verdict = f"does not fit: needs {_gb(smallest.memory)}, you have {_gb(have)}"
        return ModelPlan(model.name, source, False, verdict, None, None, None, None, vllm_note, notes)

    verdict = _verdict(recommended, default_q, wanted)
    return ModelPlan(model.name, source, True, verdict, recommended, best_quality, chosen, vllm,
                     vllm_note, notes)


def _gb(n: float) -> str:
    return f"{n / GB:.0f} GB" if n >= 100 * GB else f"{n / GB:.1f} GB"


def _raw_capacity(hw: Hardware, target: str) -> int:
    if target == "gpu":
        return sum(g.memory for g in hw.gpus)
    if target == "split":
        return sum(g.memory for g in hw.gpus) + hw.ram
    return hw.ram


def _verdict(option: Option, default_q: str, wanted: int) -> str:
    where = {"cpu": "on CPU", "gpu": "fully on GPU", "split": f"split, {option.gpu_layers} layers on GPU",
             "vllm": f"vLLM {option.detail.get('layout', '')} at {option.quantization}"}[option.target]
    if option.target != "vllm":
        if option.quantization != default_q:
            short = f", {option.ctx // 1024}k context" if option.ctx < wanted else ""
            return f"fits at {option.quantization}{short} only ({where})"
        if option.ctx < wanted:
            return f"fits with {option.ctx // 1024}k context only ({where})"
    if option.memory <= COMFORTABLE * option.budget:
        return f"fits comfortably ({where})"
    return f"fits, tight: {option.memory / GB:.1f} of {option.budget / GB:.1f} GB ({where})"


def plan_models(models: list[tuple[CatalogModel, str]], hw: Hardware, ctx: int | None = None,
                slots: int = 1) -> list[ModelPlan]:
    """Plans for several (model, source) pairs."""
    return [plan_model(m, hw, ctx, slots, source) for m, source in models]


def estimate_for(model: CatalogModel, quant: str, ctx: int, slots: int = 1) -> MemoryEstimate:
    """CPU memory estimate of a catalog model at a quantization."""
    return estimate(model.shape, estimated_gguf_size(model, quant), ctx, slots)
