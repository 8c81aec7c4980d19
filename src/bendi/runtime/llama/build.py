"""The llama.cpp build bendi runs on: its backends, the CPU variant in use, and the AMX guard.

bendi's own build (scripts/build_llama.py) compiles ggml's CPU backend as one module per CPU
class (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS) and ggml loads the best one the CPU can run; a
llama-cpp-python the user brought may instead be one library compiled for the machine it was
built on. Either way this module answers, from llama.cpp itself: which backends are loaded, which
CPU features the loaded CPU code was compiled with, and which devices it can offload to.

AMX: ggml's AMX kernels crash in the first llama_decode on Sapphire Rapids and later Xeons
(llama.cpp issue 20824). bendi's build leaves them out; for other builds `amx_guard` turns off the
"extra" weight buffer types (AMX, and with it the repacked CPU kernels) unless BENDI_AMX is set.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: backend registry names (ggml_backend_reg_name) of GPU backends, as doctor names them
GPU_BACKENDS = {"CUDA": "CUDA", "ROCm": "ROCm/HIP", "HIP": "ROCm/HIP", "MTL": "Metal", "Metal": "Metal",
                "Vulkan": "Vulkan", "CANN": "CANN", "MUSA": "MUSA", "SYCL": "SYCL", "OpenCL": "OpenCL"}
#: module file stems of GPU backends (libggml-<stem>.so) in a GGML_BACKEND_DL build
GPU_MODULES = {"cuda": "CUDA", "hip": "ROCm/HIP", "metal": "Metal", "vulkan": "Vulkan", "cann": "CANN",
               "musa": "MUSA", "sycl": "SYCL", "opencl": "OpenCL"}
#: the compile-time CPU features llama_print_system_info lists, in the order people read them
CPU_FEATURES = ("SSE3", "SSSE3", "AVX", "AVX_VNNI", "AVX2", "F16C", "FMA", "BMI2", "AVX512", "AVX512_VBMI",
                "AVX512_VNNI", "AVX512_BF16", "AMX_INT8", "NEON", "ARM_FMA", "FP16_VA", "MATMUL_INT8",
                "SVE", "DOTPROD", "SME", "RISCV_V", "VSX")
_DEV_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}

_load_lock = threading.Lock()


# -- pure: reading llama.cpp's own words -------------------------------------------------------

def parse_system_info(text: str) -> dict[str, dict[str, str]]:
    """`CPU : AVX2 = 1 | REPACK = 1 | CUDA : ARCHS = 890 | ...` -> {"CPU": {"AVX2": "1", ...}, ...}."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        if ":" in part.split("=", 1)[0]:  # "NAME : FEATURE = value" starts a backend's section
            name, _, part = part.partition(":")
            current = sections.setdefault(name.strip(), {})
            part = part.strip()
        key, _, value = part.partition("=")
        if current is None:
            current = sections.setdefault("", {})
        if key.strip():
            current[key.strip()] = value.strip()
    return sections


def cpu_features(text: str) -> list[str]:
    """The CPU instruction-set features the loaded CPU backend was compiled with."""
    cpu = parse_system_info(text).get("CPU", {})
    return [f for f in CPU_FEATURES if cpu.get(f, "0") not in ("0", "")]


def reports_amx(text: str) -> bool:
    """Whether the loaded CPU backend was compiled with ggml's AMX kernels."""
    cpu = parse_system_info(text).get("CPU", {})
    return any(cpu.get(k, "0") not in ("0", "") for k in ("AMX_INT8", "AMX_TILE", "AMX_BF16"))


@dataclass(frozen=True)
class AmxDecision:
    """What the AMX guard does to llama_model_params, and what it tells the log."""

    use_extra_bufts: bool
    message: str | None = None


def amx_guard(system_info: str, allow_amx: bool) -> AmxDecision:
    """Model parameters for a build whose system info is `system_info`.

    llama.cpp offers the AMX buffer type only through the "extra" buffer types, which also carry
    the repacked CPU kernels (CPU_REPACK), so turning off AMX in a build that has it costs those
    too. bendi's build has no AMX, so this only ever changes a llama-cpp-python brought by the user.
    """
    if not reports_amx(system_info):
        return AmxDecision(True)
    if allow_amx:
        return AmxDecision(True, "this llama.cpp build has AMX kernels and BENDI_AMX is set: using them "
                                 "(they crash llama_decode on some Xeons: llama.cpp issue 20824)")
    return AmxDecision(False, "this llama.cpp build has AMX kernels, which crash llama_decode on recent "
                              "Xeons (llama.cpp issue 20824): AMX and the repacked CPU kernels are off. "
                              "`make install` builds llama.cpp without AMX and keeps the repacked kernels; "
                              "BENDI_AMX=1 uses AMX anyway")


def variant_of(path: str) -> str | None:
    """'.../libggml-cpu-haswell.so' -> 'haswell'; None for a CPU backend built into libggml."""
    m = re.search(r"ggml-cpu-([\w.]+?)\.(?:so|dll|dylib)", Path(path).name)
    return m.group(1) if m else None


# -- impure: asking the loaded llama.cpp -------------------------------------------------------

def lib_dir() -> Path:
    """The directory llama-cpp-python loaded libllama from (LLAMA_CPP_LIB_PATH or its lib/)."""
    import llama_cpp.llama_cpp as raw

    return Path(raw._base_path)


@functools.cache
def _ggml() -> Any:
    """ggml's backend registry functions, looked up through libllama.

    Through libllama, so they are those of the libggml it uses: a wheel can carry libggml.so and
    libggml.so.0 as two files, and opening one by path would load a second registry.
    """
    import llama_cpp.llama_cpp as raw

    lib = raw._lib
    vp, sz, cp = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
    fns = {}
    for name, res, args in (
        ("ggml_backend_reg_count", sz, []),
        ("ggml_backend_reg_get", vp, [sz]),
        ("ggml_backend_reg_name", cp, [vp]),
        ("ggml_backend_dev_count", sz, []),
        ("ggml_backend_dev_get", vp, [sz]),
        ("ggml_backend_dev_name", cp, [vp]),
        ("ggml_backend_dev_description", cp, [vp]),
        ("ggml_backend_dev_type", ctypes.c_int, [vp]),
        ("ggml_backend_dev_memory", None, [vp, ctypes.POINTER(sz), ctypes.POINTER(sz)]),
        ("ggml_backend_dev_backend_reg", vp, [vp]),
        ("ggml_backend_load_all_from_path", None, [cp]),
    ):
        fn = lib[name]  # a new function object: llama_cpp's own bindings keep their signatures
        fn.restype, fn.argtypes = res, args
        fns[name] = fn
    return type("Ggml", (), {k: staticmethod(v) for k, v in fns.items()})


def ensure_loaded() -> None:
    """Make sure ggml has its backends before llama.cpp is used.

    bendi's build loads them when llama_cpp is imported. Another GGML_BACKEND_DL build would only
    look beside the python executable and in the working directory, so load from its lib/ here; a
    build with the backends linked in has them registered already.
    """
    with _load_lock:
        ggml = _ggml()
        if ggml.ggml_backend_reg_count() == 0:
            ggml.ggml_backend_load_all_from_path(str(lib_dir()).encode())
        if ggml.ggml_backend_reg_count() == 0:
            from bendi.errors import EngineError

            raise EngineError(f"llama.cpp found no backend to run on in {lib_dir()}; reinstall with `make install`")


def system_info() -> str:
    import llama_cpp

    ensure_loaded()
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


def registered_backends() -> list[str]:
    """Names of the backends llama.cpp loaded (CPU, CUDA, Vulkan, ...)."""
    ensure_loaded()
    ggml = _ggml()
    return [ggml.ggml_backend_reg_name(ggml.ggml_backend_reg_get(i)).decode()
            for i in range(ggml.ggml_backend_reg_count())]


@dataclass
class Device:
    """A device as llama.cpp sees it (the order is llama.cpp's, which tensor_split follows)."""

    name: str
    description: str
    type: str  # cpu | gpu | igpu | accel
    backend: str
    memory_free: int
    memory_total: int


def devices() -> list[Device]:
    """Every device of every loaded backend."""
    ensure_loaded()
    ggml = _ggml()
    out = []
    for i in range(ggml.ggml_backend_dev_count()):
        dev = ggml.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        ggml.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        reg = ggml.ggml_backend_dev_backend_reg(dev)
        out.append(Device(
            name=ggml.ggml_backend_dev_name(dev).decode("utf-8", "replace"),
            description=(ggml.ggml_backend_dev_description(dev) or b"").decode("utf-8", "replace"),
            type=_DEV_TYPES.get(ggml.ggml_backend_dev_type(dev), "other"),
            backend=ggml.ggml_backend_reg_name(reg).decode() if reg else "",
            memory_free=int(free.value), memory_total=int(total.value)))
    return out


def gpu_devices() -> list[Device]:
    """The devices llama.cpp can offload layers to, in its order."""
    return [d for d in devices() if d.type in ("gpu", "igpu")]


def loaded_modules() -> list[str]:
    """Paths of ggml backend modules mapped into this process (Linux: /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    seen: dict[str, None] = {}
    for line in maps.splitlines():
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if re.search(r"libggml-[\w.-]+\.so", path):
            seen.setdefault(path.strip(), None)
    return list(seen)


@dataclass
class EngineBuild:
    """What `bendi doctor` says about the llama.cpp build."""

    installed: bool
    version: str = ""
    #: "bendi" for a build by scripts/build_llama.py (version 0.3.36+bendi.<label>), else "other"
    origin: str = ""
    label: str | None = None
    lib_dir: str = ""
    #: CPU variant in use ("haswell"), "built-in" when the CPU code is inside libggml
    cpu_variant: str | None = None
    cpu_variants_available: list[str] = field(default_factory=list)
    cpu_features: list[str] = field(default_factory=list)
    repack: bool = False
    amx: bool = False
    backends: list[str] = field(default_factory=list)
    #: GPU backends compiled in (a module present or a backend loaded), doctor's names
    gpu_backends: list[str] = field(default_factory=list)
    #: GPU backends whose module is present but did not load (no driver, wrong driver)
    gpu_backends_not_loaded: list[str] = field(default_factory=list)
    gpu_offload: bool = False
    devices: list[dict[str, Any]] = field(default_factory=list)
    system_info: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def engine_build() -> EngineBuild:
    """The installed llama.cpp build, as llama.cpp itself reports it."""
    try:
        import llama_cpp

        info = system_info()
    except Exception as exc:  # noqa: BLE001 - doctor reports a broken install, it does not crash on it
        return EngineBuild(installed=False, error=f"{type(exc).__name__}: {exc}")
    version = str(getattr(llama_cpp, "__version__", "unknown"))
    directory = lib_dir()
    label = version.split("+bendi.", 1)[1] if "+bendi." in version else None
    modules = loaded_modules()
    cpu_loaded = [variant_of(m) for m in modules if variant_of(m)]
    available = sorted(v for p in directory.glob("*ggml-cpu-*") if (v := variant_of(p.name)))
    registered = registered_backends()
    compiled = {GPU_BACKENDS[b] for b in registered if b in GPU_BACKENDS}
    present = {GPU_MODULES[stem] for stem in GPU_MODULES if any(directory.glob(f"*ggml-{stem}.*"))}
    cpu = parse_system_info(info).get("CPU", {})
    return EngineBuild(
        installed=True,
        version=version,
        origin="bendi" if label else "other",
        label=label,
        lib_dir=str(directory),
        cpu_variant=cpu_loaded[0] if cpu_loaded else ("built-in" if not available else None),
        cpu_variants_available=available,
        cpu_features=cpu_features(info),
        repack=cpu.get("REPACK", "0") not in ("0", ""),
        amx=reports_amx(info),
        backends=registered,
        gpu_backends=sorted(compiled | present),
        gpu_backends_not_loaded=sorted(present - compiled),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        devices=[asdict(d) for d in devices()],
        system_info=info,
    )


@functools.cache
def _say_once(message: str) -> None:
    log.warning("%s", message)


def apply_amx_guard(mparams: Any, allow_amx: bool | None = None) -> AmxDecision:
    """Set llama_model_params for this build's AMX situation; logs the decision once per process.

    `allow_amx` defaults to the `amx` setting (BENDI_AMX)."""
    if allow_amx is None:
        from bendi.config import Settings

        allow_amx = Settings.from_env().amx
    decision = amx_guard(system_info(), allow_amx)
    mparams.use_extra_bufts = decision.use_extra_bufts
    if decision.message:
        _say_once(decision.message)
    return decision


# -- advice: a GPU the build cannot use ----------------------------------------------------------

#: vendor tool (planner.hardware) -> the llama.cpp backend its devices need, and bendi's GPU= name
TOOL_BACKENDS = {"nvidia-smi": ("CUDA", "cuda"), "rocm-smi": ("ROCm/HIP", "rocm"),
                 "npu-smi": ("CANN", "cann"), "mthreads-gmi": ("MUSA", "musa"),
                 "system_profiler": ("Metal", None)}
#: what each GPU= build needs on the machine, for the message
GPU_TOOLKITS = {"cuda": "the CUDA toolkit (nvcc)", "rocm": "ROCm (hipcc)", "cann": "the Ascend CANN toolkit",
                "musa": "the MUSA SDK", "vulkan": "the Vulkan SDK (glslc)"}


@dataclass
class BuildAdvice:
    """A GPU on this machine that the llama.cpp build cannot use, and how to fix that."""

    backend: str
    devices: list[str]
    problem: str
    command: str

    def message(self) -> str:
        return f"{self.problem}; rebuild with: {self.command}"


def build_advice(build: EngineBuild, machine_gpus: dict[str, list[str]], rebuild: str) -> list[BuildAdvice]:
    """Advice for every vendor tool in `machine_gpus` (tool -> device names) the build cannot use.

    `rebuild` is the install command with a `{gpu}` slot, e.g. "make -C /src/bendi install GPU={gpu}".
    """
    out = []
    for tool, names in machine_gpus.items():
        if not names or tool not in TOOL_BACKENDS:
            continue
        backend, gpu = TOOL_BACKENDS[tool]
        what = f"{len(names)} x {names[0]}" if len(set(names)) == 1 else ", ".join(names)
        command = rebuild.format(gpu=gpu) if gpu else rebuild.replace(" GPU={gpu}", "").format(gpu="")
        if gpu in GPU_TOOLKITS:
            command += f" (needs {GPU_TOOLKITS[gpu]})"
        if not build.installed:
            out.append(BuildAdvice(backend, names, f"this machine has {what} but llama.cpp is not installed", command))
        elif backend in build.gpu_backends_not_loaded:
            out.append(BuildAdvice(
                backend, names,
                f"the {backend} backend is built but did not load (is the driver installed and the same "
                f"major version as the toolkit it was built with?), so {what} is unused", command))
        elif backend not in build.gpu_backends:
            out.append(BuildAdvice(backend, names,
                                   f"this machine has {what} but the llama.cpp build has no {backend} backend",
                                   command))
    return out


# -- GPU placement: the planner's, with the GPUs llama.cpp sees ------------------------------------

def planning_gpus() -> list[Any]:
    """The GPUs llama.cpp can offload to, as the planner describes GPUs (free memory, in llama.cpp's order)."""
    from bendi.planner.hardware import gpu_bandwidth
    from bendi.planner.machine import Gpu

    return [Gpu(d.description or d.name, d.memory_free, gpu_bandwidth(d.description or d.name), d.type == "igpu")
            for d in gpu_devices()]


def place_model(path: Path, ctx: int, slots: int, gpu_layers: int | None) -> Any:
    """Where the model at `path` goes: `bendi plan`'s placement for this machine, or `gpu_layers` by hand."""
    from bendi.planner.placement import Placement, plan_placement

    gpus = planning_gpus()
    if not gpus:
        return Placement("cpu", 0)
    from bendi.planner.catalog import from_gguf
    from bendi.planner.hardware import available_memory
    from bendi.store.gguf import read_gguf

    model = from_gguf(path.stem, read_gguf(path))
    return plan_placement(model, gpus, available_memory()[1], ctx, slots, gpu_layers)


def apply_placement(mparams: Any, placement: Any) -> Any:
    """Set n_gpu_layers and tensor_split; returns the split array, which must outlive the model load."""
    import llama_cpp

    mparams.n_gpu_layers = placement.gpu_layers
    if len(placement.tensor_split) < 2:
        return None
    devices = int(llama_cpp.llama_max_devices())
    shares = list(placement.tensor_split)[:devices]
    array = (ctypes.c_float * devices)(*shares, *([0.0] * (devices - len(shares))))
    mparams.split_mode = llama_cpp.LLAMA_SPLIT_MODE_LAYER
    mparams.tensor_split = ctypes.cast(array, ctypes.POINTER(ctypes.c_float))
    return array
