"""The machine a plan is for: RAM and accelerators, detected or described (`--gpus 4x24GB`,
`--ram 64GB`), and the parsing of those descriptions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bendi.errors import InvalidRequest
from bendi.planner.hardware import GPU_MEMORY, gpu_bandwidth

GB = 1_000_000_000
#: share of memory the planner leaves free: the OS, other programs, estimate error
SAFETY_MARGIN = 0.10

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


def this_machine(measure: bool = True) -> Hardware:
    """This machine as the planner sees it: memory available now, detected GPUs, bandwidth."""
    from bendi.planner import hardware

    llama = hardware.detect_llama_cpp()
    detected = [
        Gpu(d.name, d.memory_free if not d.unified else d.memory_total,
            hardware.gpu_bandwidth(d.name), d.unified)
        for t in hardware.detect_accelerators() for d in t.devices
    ]
    _, avail = hardware.available_memory()
    return Hardware(avail, detected, hardware.measure_bandwidth() if measure else None,
                    origin="detected", gpu_offload=bool(llama.get("gpu_offload")))


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
            if not re.fullmatch(r"[\d.]+\s*([kmgt]i?b?)?", spec):
                known = ", ".join(sorted(k.upper() for k in GPU_MEMORY))
                raise InvalidRequest(f"unknown GPU {m.group(2)!r} in {part.strip()!r}; known: {known}; "
                                     "or give the memory, like 8x80GB")
            memory = parse_size(spec)
            typical = _TYPICAL_GPU.get(round(memory / GB))
            name = f"{round(memory / GB)} GB GPU"
            bw = gpu_bandwidth(typical) if typical else None
        if count < 1 or memory <= 0:
            raise InvalidRequest(f"GPUs {part!r}: need a positive count and size")
        gpus.extend(Gpu(name, memory, bw) for _ in range(count))
    return gpus
