"""llama.cpp placement: a model fully on GPU, split between GPU and CPU, or on CPU, with the
memory each needs and the speed it should reach."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bendi.planner.catalog import CatalogModel, estimated_gguf_size
from bendi.planner.machine import Hardware
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
