"""llama.cpp placement: a model fully on GPU, split between GPU and CPU, or on CPU, with the
memory each needs and the speed it should reach."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bendi.planner.catalog import DEFAULT_QUANT, CatalogModel, estimated_gguf_size
from bendi.planner.machine import Gpu, Hardware
from bendi.planner.memory import (
    GPU_CONTEXT_BYTES,
    bytes_per_token,
    decode_tokens_per_second,
    estimate,
)


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


# -- what the engine gives llama.cpp -------------------------------------------------------------
#
# The option says where a model runs (cpu, gpu, split) and, for a split, how many layers fit on the
# GPUs. `placement_for` turns that into the model parameters llama.cpp takes (n_gpu_layers,
# tensor_split). The engine calls the same function with the GPUs llama.cpp itself reports, so
# `bendi plan`'s verdict and what the engine is given come from one place.
#
# llama.cpp counts the output layer as one more layer after the repeating ones: with n_gpu_layers
# = k > 0 the output layer and the last k-1 repeating layers run on the GPUs, and n_layer + 1
# offloads everything. Layers are shared among several GPUs in proportion to tensor_split (given
# here by each GPU's usable memory), one GPU after another (llama.cpp's layer split mode).

@dataclass(frozen=True)
class Placement:
    """The llama.cpp offload parameters for one model load."""

    target: str  # cpu | gpu | split
    #: llama_model_params.n_gpu_layers: 0 keeps the model on the CPU, n_layer + 1 offloads all
    gpu_layers: int
    #: llama_model_params.tensor_split, in llama.cpp's GPU order; () leaves llama.cpp's default
    tensor_split: tuple[float, ...] = ()
    #: the model's repeating layers (for messages; 0 when unknown)
    n_layers: int = 0

    @property
    def offloads(self) -> bool:
        return self.gpu_layers != 0

    def describe(self) -> str:
        """One line for logs and `bendi plan`: '29/29 layers on GPU, split 0.67/0.33 over 2 GPUs'."""
        if not self.offloads:
            return "on CPU"
        total = self.n_layers + 1 if self.n_layers else None
        layers = f"{self.gpu_layers}/{total}" if total else str(self.gpu_layers)
        text = f"{layers} layers on GPU"
        if self.target == "split":
            text += " (the rest on CPU)"
        if len(self.tensor_split) > 1:
            text += ", split " + "/".join(f"{s:.2f}" for s in self.tensor_split) + f" over {len(self.tensor_split)} GPUs"
        return text


def gpu_shares(gpus: list[Gpu]) -> tuple[float, ...]:
    """Each GPU's share of the offloaded layers: its usable memory over all of theirs."""
    if len(gpus) < 2:
        return ()
    total = sum(max(0, g.memory) for g in gpus)
    if total <= 0:
        return ()
    return tuple(round(max(0, g.memory) / total, 4) for g in gpus)


def placement_for(option: Option, gpus: list[Gpu], n_layers: int) -> Placement:
    """What the engine gives llama.cpp for the planner's `option` on `gpus` (llama.cpp's order)."""
    if option.target == "cpu" or not gpus or not option.gpu_layers:
        return Placement("cpu", 0, (), n_layers)
    if option.target == "gpu":
        return Placement("gpu", n_layers + 1, gpu_shares(gpus), n_layers)
    if option.target == "split":
        # the planner counts the layers that fit; llama.cpp's count includes the output layer,
        # which then goes to the GPU instead of one repeating layer
        layers = max(1, min(option.gpu_layers, n_layers))
        return Placement("split", layers, gpu_shares(gpus), n_layers)
    raise ValueError(f"not a llama.cpp placement: {option.target}")


def explicit_placement(gpu_layers: int, gpus: list[Gpu], n_layers: int) -> Placement:
    """BENDI_GPU_LAYERS set by hand: that many layers (negative: all), shared by memory."""
    if gpu_layers == 0 or not gpus:
        return Placement("cpu", 0, (), n_layers)
    full = n_layers + 1 if n_layers else gpu_layers
    layers = full if gpu_layers < 0 else min(gpu_layers, full) if n_layers else gpu_layers
    return Placement("gpu" if layers >= full else "split", layers, gpu_shares(gpus), n_layers)


def plan_llama_cpp(model: CatalogModel, gpus: list[Gpu], ram: int, ctx: int, slots: int) -> Option:
    """The llama.cpp option `bendi plan` picks for an installed model at `ctx` x `slots`.

    The same candidates as the plan, in its order (all on the GPUs, split, CPU), first that fits;
    when none fits (a forced load), the split if there is one: as much on the GPUs as the plan
    thinks fits, the rest in RAM.
    """
    quant = model.installed_quant or DEFAULT_QUANT
    options = llama_options(model, Hardware(ram, gpus, origin="detected"), quant, ctx, slots)
    fitting = next((o for o in options if o.fits), None)
    return fitting or next((o for o in options if o.target == "split"), options[-1])


def plan_placement(model: CatalogModel, gpus: list[Gpu], ram: int, ctx: int, slots: int,
                   gpu_layers: int | None = None) -> Placement:
    """What the engine gives llama.cpp: `gpu_layers` when set by hand, else the plan's placement."""
    if gpu_layers is not None:
        return explicit_placement(gpu_layers, gpus, model.shape.layers)
    if not gpus:
        return Placement("cpu", 0, (), model.shape.layers)
    return placement_for(plan_llama_cpp(model, gpus, ram, ctx, slots), gpus, model.shape.layers)
