"""What this machine has: CPU, memory, disk, accelerators, and what the llama.cpp build can use.

Detection runs vendor tools (impure); parsing their output is done by pure `parse_*` functions,
unit-tested on recorded samples. A missing tool is not an error: it is reported as not found.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024

#: Memory bandwidth in bytes/s of common accelerators (vendor datasheets), for speed estimates.
#: Keys are matched as lowercase substrings of the reported name, longest first.
GPU_BANDWIDTH: dict[str, float] = {
    "h200": 4.8e12, "h100 nvl": 3.9e12, "h100 pcie": 2.0e12, "h100": 3.35e12, "h800": 3.35e12,
    "h20": 4.0e12, "b200": 8.0e12, "gh200": 4.0e12, "a100 80gb": 2.0e12, "a100-sxm4-80gb": 2.04e12,
    "a100": 1.55e12, "a800": 2.0e12, "l40s": 0.864e12, "l40": 0.864e12, "l20": 0.864e12,
    "a6000": 0.768e12, "a10": 0.6e12, "l4": 0.3e12, "t4": 0.32e12, "v100": 0.9e12,
    "rtx 5090": 1.79e12, "rtx 4090": 1.01e12, "rtx 4080": 0.717e12, "rtx 3090": 0.936e12,
    "rtx 4070": 0.504e12, "rtx 3080": 0.76e12, "rtx 4060": 0.272e12,
    "mi300x": 5.3e12, "mi250": 3.2e12, "mi210": 1.6e12, "rx 7900 xtx": 0.96e12,
    "910b": 1.6e12, "910": 1.2e12, "310p": 0.2e12,
    "mtt s4000": 0.768e12, "mtt s80": 0.448e12, "s4000": 0.768e12,
    "m1 ultra": 0.8e12, "m2 ultra": 0.8e12, "m3 ultra": 0.819e12, "m1 max": 0.4e12,
    "m2 max": 0.4e12, "m3 max": 0.4e12, "m4 max": 0.546e12, "m1 pro": 0.2e12, "m2 pro": 0.2e12,
    "m3 pro": 0.15e12, "m4 pro": 0.273e12, "apple m1": 0.068e12, "apple m2": 0.1e12,
    "apple m3": 0.1e12, "apple m4": 0.12e12,
}

#: Accelerator names accepted by `--gpus NxNAME`: memory (bytes) per device.
GPU_MEMORY: dict[str, int] = {
    "h200": 141 * 10**9, "h100": 80 * 10**9, "h800": 80 * 10**9, "h20": 96 * 10**9,
    "b200": 192 * 10**9, "a100": 80 * 10**9, "a800": 80 * 10**9, "l40s": 48 * 10**9,
    "l20": 48 * 10**9, "a6000": 48 * 10**9, "a10": 24 * 10**9, "l4": 24 * 10**9,
    "rtx 4090": 24 * 10**9, "rtx 3090": 24 * 10**9, "rtx 5090": 32 * 10**9, "mi300x": 192 * 10**9,
    "910b": 64 * 10**9, "mtt s4000": 48 * 10**9,
}


def gpu_bandwidth(name: str) -> float | None:
    """Datasheet memory bandwidth for an accelerator name, if known."""
    low = name.lower()
    for key in sorted(GPU_BANDWIDTH, key=len, reverse=True):
        if key in low:
            return GPU_BANDWIDTH[key]
    return None


@dataclass
class Accelerator:
    """One GPU/NPU and its memory."""

    vendor: str
    name: str
    memory_total: int
    memory_used: int | None = None
    index: int = 0
    #: True when the memory is shared with the CPU (Apple silicon)
    unified: bool = False

    @property
    def memory_free(self) -> int:
        return self.memory_total - (self.memory_used or 0)


@dataclass
class ToolReport:
    """What one vendor tool said: found or not, and its devices."""

    tool: str
    found: bool
    devices: list[Accelerator] = field(default_factory=list)
    error: str | None = None


@dataclass
class CpuInfo:
    model: str
    physical_cores: int
    logical_cores: int
    flags: dict[str, bool]


@dataclass
class MachineReport:
    """Everything `bendi doctor` reports."""

    os: str
    arch: str
    cpu: CpuInfo
    memory_total: int
    memory_available: int
    disk_free: int
    disk_path: str
    tools: list[ToolReport]
    llama_cpp: dict[str, Any]

    @property
    def accelerators(self) -> list[Accelerator]:
        return [d for t in self.tools for d in t.devices]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["accelerators"] = [asdict(a) for a in self.accelerators]
        return data


# -- parsers (pure) --------------------------------------------------------------------------

def parse_cpuinfo(text: str) -> tuple[str, dict[str, bool]]:
    """CPU model and SIMD flags from Linux /proc/cpuinfo (x86 `flags` or ARM `Features`)."""
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    if not model:
        part = re.search(r"^CPU part\s*:\s*(\S+)", text, re.M)
        model = f"ARM (part {part.group(1)})" if part else "unknown"
    return model, {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "avx512_vnni": "avx512_vnni" in flags,
        "amx": "amx_tile" in flags,
        "neon": "asimd" in flags or "neon" in flags,
        "sve": "sve" in flags,
    }


def parse_nvidia_smi(text: str) -> list[Accelerator]:
    """`nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader,nounits`."""
    devices = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        try:
            total, used = int(float(parts[2])), int(float(parts[3]))
        except ValueError:  # "[N/A]" on some vGPU / MIG setups
            continue
        devices.append(Accelerator("nvidia", parts[1], total * MiB, used * MiB, int(parts[0])))
    return devices


def parse_rocm_smi(text: str) -> list[Accelerator]:
    """`rocm-smi --showproductname --showmeminfo vram --json`."""
    data = json.loads(text)
    devices = []
    for key in sorted(data, key=lambda k: int(re.sub(r"\D", "", k) or 0)):
        card = data[key]
        if not key.startswith("card") or not isinstance(card, dict):
            continue
        total = card.get("VRAM Total Memory (B)")
        if total is None:
            continue
        name = card.get("Card Series") or card.get("Card series") or card.get("Card model") or "AMD GPU"
        used = card.get("VRAM Total Used Memory (B)")
        devices.append(Accelerator("amd", str(name), int(total), int(used) if used else None,
                                   int(re.sub(r"\D", "", key) or 0)))
    return devices


def parse_npu_smi(text: str) -> list[Accelerator]:
    """`npu-smi info`: two table rows per chip; HBM-Usage(MB) is the last `used / total` pair."""
    devices = []
    lines = text.splitlines()
    head = re.compile(r"^\|\s*(\d+)\s+(\S[^|]*?)\s*\|\s*(OK|Warning|Alarm|Critical|Abnormal|Unknown)\s*\|")
    for i, line in enumerate(lines):
        m = head.match(line)
        if not m or i + 1 >= len(lines):
            continue
        pairs = re.findall(r"(\d+)\s*/\s*(\d+)", lines[i + 1])
        if not pairs:
            continue
        used, total = (int(x) for x in pairs[-1])
        devices.append(Accelerator("huawei", f"Ascend {m.group(2).strip()}", total * MiB, used * MiB,
                                   int(m.group(1))))
    return devices


def parse_mthreads_gmi(text: str) -> list[Accelerator]:
    """`mthreads-gmi`: a device row `0  MTT S4000  |<bus>  |0%  2MiB(49152MiB)`."""
    devices = []
    row = re.compile(r"^\s*(\d+)\s+(MTT[^|]*?)\s*\|.*?(\d+)\s*MiB\s*\(\s*(\d+)\s*MiB\s*\)")
    for line in text.splitlines():
        m = row.match(line)
        if m:
            devices.append(Accelerator("moorethreads", m.group(2).strip(), int(m.group(4)) * MiB,
                                       int(m.group(3)) * MiB, int(m.group(1))))
    return devices


def parse_apple(memsize: str, profiler_json: str) -> list[Accelerator]:
    """Apple silicon: `sysctl -n hw.memsize` and `system_profiler SPDisplaysDataType -json`."""
    total = int(memsize.strip())
    data = json.loads(profiler_json) if profiler_json.strip() else {}
    devices = []
    for i, gpu in enumerate(data.get("SPDisplaysDataType", [])):
        name = gpu.get("sppci_model") or gpu.get("_name") or "Apple GPU"
        if "apple" not in name.lower():
            continue  # a discrete GPU in an Intel Mac: not unified memory, no size reported
        cores = gpu.get("sppci_cores")
        label = f"{name} ({cores}-core GPU)" if cores else name
        devices.append(Accelerator("apple", label, total, None, i, unified=True))
    return devices


# -- detection (impure) ----------------------------------------------------------------------

Runner = Callable[[list[str]], str | None]


def run_tool(argv: list[str], timeout: float = 10.0) -> str | None:
    """The stdout of a tool, or None if it is not installed; raises on failure."""
    if shutil.which(argv[0]) is None:
        return None
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError((proc.stderr or proc.stdout).strip().splitlines()[-1:] or f"exit {proc.returncode}")
    return proc.stdout


_TOOLS: list[tuple[str, list[str], Callable[[str], list[Accelerator]]]] = [
    ("nvidia-smi", ["nvidia-smi", "--query-gpu=index,name,memory.total,memory.used",
                    "--format=csv,noheader,nounits"], parse_nvidia_smi),
    ("rocm-smi", ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"], parse_rocm_smi),
    ("npu-smi", ["npu-smi", "info"], parse_npu_smi),
    ("mthreads-gmi", ["mthreads-gmi"], parse_mthreads_gmi),
]


def detect_accelerators(runner: Runner = run_tool) -> list[ToolReport]:
    """Ask every vendor tool; a missing one is reported as not found, a failing one with its error."""
    reports = []
    for tool, argv, parse in _TOOLS:
        try:
            out = runner(argv)
            if out is None:
                reports.append(ToolReport(tool, False))
            else:
                reports.append(ToolReport(tool, True, parse(out)))
        except Exception as exc:  # noqa: BLE001 - a broken driver must not break `doctor`
            reports.append(ToolReport(tool, True, error=f"{type(exc).__name__}: {exc}"))
    if platform.system() == "Darwin":
        try:
            mem = runner(["sysctl", "-n", "hw.memsize"]) or "0"
            prof = runner(["system_profiler", "SPDisplaysDataType", "-json"]) or ""
            reports.append(ToolReport("system_profiler", True, parse_apple(mem, prof)))
        except Exception as exc:  # noqa: BLE001
            reports.append(ToolReport("system_profiler", True, error=str(exc)))
    else:
        reports.append(ToolReport("system_profiler", False))
    return reports


def detect_cpu() -> CpuInfo:
    import psutil

    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    model, flags = "unknown", dict[str, bool]()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        model, flags = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    elif platform.system() == "Darwin":
        with contextlib.suppress(Exception):
            model = (run_tool(["sysctl", "-n", "machdep.cpu.brand_string"]) or "").strip() or "unknown"
        arm = platform.machine() == "arm64"
        flags = {"avx2": False, "avx512": False, "avx512_vnni": False, "amx": False, "neon": arm, "sve": False}
    return CpuInfo(model, int(physical), int(logical), flags)


def detect_llama_cpp() -> dict[str, Any]:
    """What the installed llama.cpp build supports (`bendi.runtime.llama.build.EngineBuild`)."""
    from bendi.runtime.llama.build import engine_build

    return engine_build().to_dict()


def available_memory() -> tuple[int, int]:
    """(total, available) RAM in bytes."""
    import psutil

    vm = psutil.virtual_memory()
    return int(vm.total), int(vm.available)


def detect(home: Path, runner: Runner = run_tool) -> MachineReport:
    """Everything about this machine that `bendi doctor` shows."""
    total, avail = available_memory()
    probe = home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    disk = shutil.disk_usage(probe)
    return MachineReport(
        os=f"{platform.system()} {platform.release()}",
        arch=platform.machine(),
        cpu=detect_cpu(),
        memory_total=total,
        memory_available=avail,
        disk_free=int(disk.free),
        disk_path=str(home),
        tools=detect_accelerators(runner),
        llama_cpp=detect_llama_cpp(),
    )


def measure_bandwidth(size: int = 64 * MiB, repeats: int = 3) -> float:
    """Memory bandwidth in bytes/s from a quick copy (read + write) of `size` bytes, best of N.

    One thread copying understates what llama.cpp's threads reach on many-channel servers, and
    overstates nothing: the speed estimates built on it are conservative.
    """
    import numpy as np

    src = np.ones(size // 8, dtype=np.float64)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * size / best if best > 0 else 0.0
