#!/usr/bin/env python3
"""Build and install llama-cpp-python the way bendi needs it: one wheel that runs on every CPU.

pip's default build of llama-cpp-python compiles llama.cpp with `-march=native` and caches the
wheel under the sdist's name, so the next install on another CPU gets code for the wrong one (an
AVX-512 wheel on an AVX2 box dies with SIGILL; a wheel built on an AMX Xeon enables ggml's AMX
kernels, which crash in llama_decode: llama.cpp issue 20824). This script builds instead:

- on Linux (x86-64 and arm64), ggml's CPU backend as runtime-dispatched variant modules
  (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS): one wheel, and at start ggml loads the best variant
  the CPU can run. The AMX variant (sapphirerapids) is left out unless `--amx` is given; Sapphire
  Rapids and later Xeons then run the zen4 variant (AVX-512 VBMI/VNNI/BF16 and the repacked
  Q4_0/IQ4_NL kernels).
- elsewhere (macOS), upstream's default flags; those are native, so the cache key holds the CPU.
- with `--gpu cuda`, also llama.cpp's CUDA backend (needs nvcc).

Wheels are cached under ~/.cache/bendi/llama-wheels/: compiled/<gpu>.<key>/ holds what the compiler
made, keyed by a hash of everything that changes the binary (version, source patches, CMake flags,
platform, and the CPU where flags are native); <label>/ holds that wheel packaged for install (the
backend loader added to llama_cpp, the version 0.3.36+bendi.<label>, which `bendi doctor` shows),
so a packaging fix costs seconds, not a compile. pip's own cache never sees them, so a wheel is
only reused where it can run.

Standard library only: it runs before bendi is installed.

    python3 scripts/build_llama.py --python .venv/bin/python           # build if needed, install
    python3 scripts/build_llama.py --gpu cuda --cuda-arch "89;90"       # with CUDA
    python3 scripts/build_llama.py --print-key                          # what would be built
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"
#: the sdist's sha256 (PyPI's): checked on every source, downloaded or given with --sdist
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
#: bump when a source patch or a default flag below changes what gets compiled
BUILD_REVISION = 1
#: bump when the Python-side packaging (LOADER_PATCH) changes: repackages, no recompiling
PACKAGE_REVISION = 2

#: x86 variants of GGML_CPU_ALL_VARIANTS that are not built, and why. A CPU of a dropped class runs
#: the best remaining variant it supports (correct, a little slower). What is left: x64 (any
#: x86-64), haswell (AVX2), skylakex (AVX-512), cascadelake (+VNNI), zen4 (+BF16: Zen 4/5, and
#: Sapphire Rapids and later Xeons once AMX is out), alderlake (AVX-VNNI without AVX-512). Each
#: variant is about a minute of one core's compiling (bench/README.md), on every fresh machine.
X86_DROPPED = {
    "sapphirerapids": "its AMX kernels crash in llama_decode (llama.cpp issue 20824); --amx keeps it",
    "sse42": "pre-AVX CPUs (2008-2011): no ggml kernel uses SSE4.2; they run x64",
    "sandybridge": "AVX without AVX2 (2011-2013): rare; runs x64",
    "ivybridge": "F16C alone over sandybridge: rare; runs x64",
    "piledriver": "AMD FMA4-era: rare; runs x64",
    "icelake": "adds AVX512_VBMI, which no ggml kernel uses: Ice Lake runs cascadelake, the same kernels",
    "cannonlake": "one mobile CPU generation: runs skylakex",
    "cooperlake": "4-socket Xeons of 2020: run cascadelake",
}

#: what the wheel's llama_cpp/llama_cpp.py gets appended: with GGML_BACKEND_DL, the CPU variants
#: and GPU backends are modules beside libllama, and ggml would only look for them next to the
#: python executable and in the working directory.
PATCH_MARK = "# --- added by bendi's scripts/build_llama.py"
LOADER_PATCH = PATCH_MARK + ''' ---------------------------------------------------
# This llama.cpp is built with GGML_BACKEND_DL: the CPU backend (one module per CPU class) and any
# GPU backend are loadable modules in this directory. Load them here, once, so that every user of
# this package (Llama(), llama_cpp.server, bendi) runs on the best variant this CPU supports.
# The ggml functions are looked up through libllama, so they are those of the libggml it uses.
def _bendi_load_backends() -> None:
    reg_count = _lib["ggml_backend_reg_count"]
    reg_count.restype = ctypes.c_size_t
    if reg_count() != 0:
        return
    load_all = _lib["ggml_backend_load_all_from_path"]
    load_all.argtypes, load_all.restype = [ctypes.c_char_p], None
    # quiet while loading (ggml logs each module it loads), then llama.cpp's default log again
    quiet = llama_log_callback(lambda level, text, user_data: None)
    llama_log_set(quiet, ctypes.c_void_p(0))
    try:
        load_all(str(_base_path).encode())
    finally:
        llama_log_set(llama_log_callback(), ctypes.c_void_p(0))


_bendi_load_backends()
'''

LOADER_ANCHOR = "_lib = load_shared_library(_lib_base_name, _base_path)"


def log(msg: str) -> None:
    print(f"build_llama: {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    print(f"build_llama: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# -- what to build ---------------------------------------------------------------------------

def find_nvcc() -> str | None:
    """The real nvcc (CMake needs the toolkit's own, not a wrapper script on PATH)."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def nvidia_compute_caps() -> list[str]:
    """Compute capabilities of the NVIDIA GPUs here, as CMake wants them ('90'), or []."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    caps = {line.strip().replace(".", "") for line in out.splitlines() if re.fullmatch(r"\d+\.\d+", line.strip())}
    return sorted(caps)


#: GPU backends this script can build: CMake flag, and the tool that must be present. Only CUDA has
#: been compiled by bendi's maintainers (not run: no GPU); the others pass llama.cpp's documented
#: flag and need that vendor's toolkit.
GPU_BUILDS = {
    "cuda": ("-DGGML_CUDA=ON", "nvcc", "the CUDA toolkit (nvcc): NVIDIA's cuda-toolkit package, or set CUDA_HOME"),
    "rocm": ("-DGGML_HIP=ON", "hipconfig", "ROCm (hipconfig, hipcc) from AMD's ROCm packages"),
    "vulkan": ("-DGGML_VULKAN=ON", "glslc", "the Vulkan SDK (headers, libvulkan, glslc)"),
    "cann": ("-DGGML_CANN=ON", "ASCEND_TOOLKIT_HOME", "the Ascend CANN toolkit (source its set_env.sh)"),
    "musa": ("-DGGML_MUSA=ON", "mcc", "the MUSA SDK (/usr/local/musa/bin on PATH)"),
}


def choose_gpu(requested: str) -> str:
    """cpu or a GPU_BUILDS key. `auto` builds CUDA only where nvcc and an NVIDIA GPU are both present."""
    if requested != "auto":
        return requested
    return "cuda" if find_nvcc() and nvidia_compute_caps() else "cpu"


def has_cublas(nvcc: str) -> bool:
    """llama.cpp's CUDA backend links cuBLAS; some toolkit installs (pip's nvidia-* wheels) lack it."""
    include = Path(nvcc).resolve().parent.parent / "include"
    dirs = [include, *(Path(p) for p in os.environ.get("CPATH", "").split(os.pathsep) if p)]
    return any((d / "cublas_v2.h").is_file() for d in dirs)


def toolkit_present(gpu: str) -> bool:
    tool = GPU_BUILDS[gpu][1]
    if gpu == "cuda":
        nvcc = find_nvcc()
        if nvcc and not has_cublas(nvcc):
            fail(f"the CUDA toolkit of {nvcc} has no cuBLAS (cublas_v2.h), which llama.cpp's CUDA backend "
                 "links: install the toolkit's cuBLAS development files (NVIDIA's libcublas-dev package, "
                 "or the cuda-toolkit meta-package), or put them on CPATH / LIBRARY_PATH / CMAKE_LIBRARY_PATH")
        return nvcc is not None
    if tool.isupper():  # an environment variable the toolkit's setup script exports
        return bool(os.environ.get(tool))
    return shutil.which(tool) is not None


def cpu_identity() -> str:
    """The CPU, for keying builds whose flags are native (macOS)."""
    if sys.platform == "darwin":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
    return platform.processor() or platform.machine()


def dispatched() -> bool:
    """Whether this platform gets runtime-dispatched CPU variants (ggml supports them here)."""
    return sys.platform.startswith("linux") and platform.machine().lower() in (
        "x86_64", "amd64", "aarch64", "arm64")


def cmake_args(gpu: str, cuda_arch: str | None, amx: bool) -> list[str]:
    # mtmd (llava, vision) is not used by bendi and is a few minutes of compiling; llama_cpp
    # imports it only when a vision chat handler is built
    args: list[str] = ["-DLLAVA_BUILD=OFF"]
    if dispatched():
        args += ["-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON",
                 # the variant modules install beside libllama, where the loader patch looks
                 "-DCMAKE_INSTALL_BINDIR=llama_cpp/lib"]
    if gpu != "cpu":
        flag, _, needs = GPU_BUILDS[gpu]
        if not toolkit_present(gpu):
            fail(f"GPU={gpu} needs {needs}; it was not found on this machine")
        args.append(flag)
    if gpu == "cuda":
        arch = cuda_arch or ";".join(nvidia_compute_caps()) or "75;80;86;89;90"
        args += [f"-DCMAKE_CUDA_COMPILER={find_nvcc()}", f"-DCMAKE_CUDA_ARCHITECTURES={arch}"]
    if amx and not dispatched():
        log("--amx only applies to dispatched Linux builds; ignored")
    return args


def build_key(args: list[str], amx: bool) -> dict[str, object]:
    key: dict[str, object] = {
        "llama_cpp_python": LLAMA_CPP_PYTHON,
        "revision": BUILD_REVISION,
        "cmake_args": args,
        "platform": sys.platform,
        "machine": platform.machine(),
        "libc": "-".join(platform.libc_ver()),
        "dropped_variants": sorted(set(X86_DROPPED) - ({"sapphirerapids"} if amx else set())),
    }
    if not dispatched():
        key["cpu"] = cpu_identity()  # native flags: the wheel only runs on this kind of CPU
    return key


def key_hash(key: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def wheel_label(gpu: str, key: dict[str, object]) -> str:
    """The installed wheel's version label: what was compiled, and how it was packaged."""
    return f"{gpu}.{key_hash({'compiled': key_hash(key), 'package': PACKAGE_REVISION})}"


# -- building --------------------------------------------------------------------------------

@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One build per key at a time: a second `make install` waits, then reuses the wheel."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another build of this wheel is running; waiting for it ({path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_sdist(python: str, cache: Path, given: Path | None) -> Path:
    """The llama-cpp-python source: --sdist, the copy kept in the cache, or pip download.

    The cache keeps a copy so a later build (GPU=cuda after a CPU build) needs no network.
    """
    kept = cache / "sdist" / SDIST_NAME
    if given is None and kept.is_file():
        return kept
    if given is not None:
        if not given.is_file():
            fail(f"--sdist {given}: no such file")
        source = given
    else:
        log(f"fetching the llama-cpp-python {LLAMA_CPP_PYTHON} source (pip download, ~77 MB)")
        tmp = Path(tempfile.mkdtemp(prefix="bendi-sdist-"))
        # --no-binary for this package only: with :all:, pip would also compile the build backend
        # and its whole build-dependency chain (setuptools, hatchling...) from source, for minutes
        cmd = [python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
               f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        source = tmp / SDIST_NAME
        if not source.is_file():
            fail(f"could not download llama-cpp-python {LLAMA_CPP_PYTHON} (offline? pass --sdist "
                 f"PATH to a copy of {SDIST_NAME}): {proc.stderr.strip()[-800:]}")
    digest = sha256_of(source)
    if digest != SDIST_SHA256:
        fail(f"{source} has sha256 {digest}, expected {SDIST_SHA256} (a different or damaged file)")
    kept.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve() != kept.resolve():
        shutil.copyfile(source, kept.with_suffix(".part"))
        os.replace(kept.with_suffix(".part"), kept)
    return kept


def patch_source(src: Path, amx: bool) -> list[str]:
    """Apply bendi's changes to an unpacked sdist; returns the x86 variants that will be built."""
    cmake = src / "vendor/llama.cpp/ggml/src/CMakeLists.txt"
    text = cmake.read_text()
    dropped = {k: v for k, v in X86_DROPPED.items() if not (amx and k == "sapphirerapids")}
    for name in dropped:
        text, n = re.subn(rf"^[ \t]*ggml_add_cpu_backend_variant\({re.escape(name)}\b[^\n]*\n", "",
                          text, flags=re.M)
        if n != 1:
            fail(f"llama.cpp's variant list changed ({name} found {n} times in {cmake}); update X86_DROPPED")
    cmake.write_text(text)
    x86_block = text[text.index('GGML_SYSTEM_ARCH STREQUAL "x86")', text.index("GGML_CPU_ALL_VARIANTS")):]
    x86_block = x86_block[:x86_block.index("elseif")]
    kept = re.findall(r"ggml_add_cpu_backend_variant\((\w+)", x86_block)

    if LOADER_ANCHOR not in (src / "llama_cpp/llama_cpp.py").read_text():
        fail(f"llama_cpp/llama_cpp.py no longer has {LOADER_ANCHOR!r}; update the loader patch")
    return kept


def variant_module(name: str) -> str | None:
    """'llama_cpp/lib/libggml-cpu-haswell.so' -> 'haswell'; None for any other file."""
    m = re.fullmatch(r"(?:.*/)?libggml-cpu-(\w+)\.so", name)
    return m.group(1) if m else None


def reusable_compile(compiled: Path, key: dict[str, object]) -> tuple[Path, frozenset[str]] | None:
    """A compiled wheel in `compiled` that holds every CPU variant `key` wants, and the extra ones.

    The variant modules are independent shared objects that ggml finds by file name at run time,
    so a wheel compiled with more variants, less the extra modules, is the wheel a compile of
    `key` would make. This keeps an earlier, larger build usable when the variant list shrinks
    (no 20-80 minute recompile on machines that already have one).
    """
    want_dropped = set(key["dropped_variants"])  # type: ignore[arg-type]
    same = {k: v for k, v in key.items() if k != "dropped_variants"}
    for info_path in sorted(compiled.glob("*/build-info.json")):
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            continue
        if {k: info.get(k) for k in same} != same or not isinstance(info.get("dropped_variants"), list):
            continue
        had_dropped = set(info["dropped_variants"])
        wheels = sorted(info_path.parent.glob("*.whl"))
        if had_dropped <= want_dropped and wheels:
            return wheels[0], frozenset(want_dropped - had_dropped)
    return None


def package_wheel(raw: Path, label: str, out_dir: Path, drop: frozenset[str] = frozenset()) -> Path:
    """The compiled wheel `raw`, versioned {LLAMA_CPP_PYTHON}+bendi.{label} and given the loader.

    Only Python files and metadata change, so a fix to the packaging costs seconds, not a compile.
    `drop` names CPU variants whose modules are left out (see `reusable_compile`). RECORD is
    rewritten with the new hashes, as the wheel format requires.
    """
    import base64
    import zipfile

    version = f"{LLAMA_CPP_PYTHON}+bendi.{label}"
    with zipfile.ZipFile(raw) as zin:
        names = zin.namelist()
        old_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        new_info = f"llama_cpp_python-{version}.dist-info"
        files: dict[str, bytes] = {}
        for name in names:
            if name == f"{old_info}/RECORD" or variant_module(name) in drop:
                continue
            data = zin.read(name)
            if name == "llama_cpp/llama_cpp.py":
                text = data.decode().split("\n\n" + PATCH_MARK)[0].rstrip("\n") + "\n"
                if LOADER_ANCHOR not in text:
                    fail("the wheel's llama_cpp.py has no loader anchor")
                data = (text + ("\n\n" + LOADER_PATCH if dispatched() else "")).encode()
            elif name == "llama_cpp/__init__.py":
                data = re.sub(rb'__version__ = "[^"]*"', f'__version__ = "{version}"'.encode(), data)
            elif name == f"{old_info}/METADATA":
                data = re.sub(rb"(?m)^Version: .*$", f"Version: {version}".encode(), data, count=1)
            files[name.replace(old_info + "/", new_info + "/", 1)] = data
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{new_info}/RECORD,,")
    files[f"{new_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    tag = raw.name.split("-", 2)[2]  # py3-none-linux_x86_64.whl
    out = out_dir / f"llama_cpp_python-{version}-{tag}"
    part = out.with_suffix(".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zout:
        for name, data in files.items():
            zout.writestr(name, data)
    os.replace(part, out)
    return out


#: what compiling needs, by command; the Debian packages that provide them (CMake and Ninja could
#: also come from PyPI through scikit-build-core, but the system ones spare that download)
BUILD_TOOLS = {"cc": "build-essential", "c++": "build-essential", "cmake": "cmake", "ninja": "ninja-build"}


def ensure_build_tools() -> None:
    """A C/C++ compiler and CMake, installed with apt-get (as root, or through sudo -n) when missing.

    Only a compile needs them, so a machine whose wheel is cached never installs anything.
    """
    missing = [cmd for cmd in BUILD_TOOLS if not shutil.which(cmd)]
    if not missing:
        return
    packages = sorted({BUILD_TOOLS[cmd] for cmd in missing})
    sudo: list[str] | None = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
    if not shutil.which("apt-get") or sudo is None:
        fail(f"compiling llama.cpp needs {', '.join(missing)}, not found: install a C/C++ compiler, "
             f"CMake and Ninja (Debian/Ubuntu: apt-get install {' '.join(packages)}), then run this again")
    log(f"compiling llama.cpp needs {', '.join(missing)}: apt-get install {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
        if subprocess.run([*sudo, *cmd], env=env).returncode != 0:
            fail(f"`{' '.join(cmd)}` failed; install {' '.join(packages)} and run this again")
    still = [cmd for cmd in BUILD_TOOLS if not shutil.which(cmd)]
    if still:
        fail(f"still missing after apt-get: {', '.join(still)}")


def compile_wheel(python: str, key: dict[str, object], out: Path, jobs: int, amx: bool, sdist: Path) -> Path:
    """Compile llama-cpp-python from the patched source into the cache entry `out` (the raw wheel)."""
    ensure_build_tools()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bendi-llama-build-") as tmp:
        work = Path(tmp)
        with tarfile.open(sdist) as tar:
            try:
                tar.extractall(work / "src", filter="data")
            except TypeError:  # Python before 3.11.4 has no extraction filters
                tar.extractall(work / "src")  # noqa: S202 - the sdist comes from the package index
        src = next((work / "src").iterdir())
        kept = patch_source(src, amx)
        env = dict(os.environ)
        env["CMAKE_ARGS"] = " ".join(key["cmake_args"])  # type: ignore[arg-type]
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(jobs)
        env.pop("FORCE_CMAKE", None)
        log_path = out.parent / f"{out.name}.build.log"
        log(f"compiling llama.cpp ({env['CMAKE_ARGS'] or 'default flags'}); "
            f"{jobs} jobs; log: {log_path}. 15-45 min on 2 cores, depending on what else runs.")
        started = time.monotonic()
        with open(log_path, "w") as logf:
            proc = subprocess.run(
                [python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-v", "-w",
                 str(work / "wheel"), str(src)],
                stdout=logf, stderr=subprocess.STDOUT, env=env)
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            fail(f"llama-cpp-python failed to build after {seconds:.0f} s; last lines of {log_path}:\n{tail}")
        wheels = list((work / "wheel").glob("*.whl"))
        if len(wheels) != 1:
            fail(f"expected one wheel, found {wheels}")
        staging = out.parent / f".{out.name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(wheels[0], staging / wheels[0].name)
        info = {**key, "x86_variants": kept if dispatched() and platform.machine() in ("x86_64", "AMD64") else None,
                "build_seconds": round(seconds), "built": time.strftime("%Y-%m-%d %H:%M:%S"),
                "compiled_wheel": wheels[0].name}
        (staging / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        os.replace(staging, out)  # atomic: a cache entry is whole or absent
        log(f"built {wheels[0].name} in {seconds / 60:.1f} min")
        return out / wheels[0].name


def installed_version(python: str) -> str | None:
    code = ("import importlib.metadata as m\n"
            "try: print(m.version('llama_cpp_python'))\n"
            "except m.PackageNotFoundError: pass")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()
    return out or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter (venv) to install into")
    parser.add_argument("--gpu", default=os.environ.get("GPU") or "auto", choices=["auto", "cpu", *GPU_BUILDS],
                        help="auto: CUDA when nvcc and an NVIDIA GPU are both present, else cpu")
    parser.add_argument("--cuda-arch", default=os.environ.get("CUDA_ARCH") or None,
                        help='CMAKE_CUDA_ARCHITECTURES, e.g. "89;90" (default: the GPUs here)')
    parser.add_argument("--amx", action="store_true", default=os.environ.get("AMX") == "1",
                        help="also build the AMX variant (bendi only uses it with BENDI_AMX=1)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL") or os.cpu_count() or 2))
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("BENDI_WHEEL_CACHE") or
                        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bendi" / "llama-wheels"))
    parser.add_argument("--sdist", type=Path, help=f"a local copy of {SDIST_NAME} (offline machines)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cache has the wheel")
    parser.add_argument("--print-key", action="store_true", help="print the build key and exit")
    parser.add_argument("--no-install", action="store_true", help="build (or find) the wheel only")
    opts = parser.parse_args(argv)

    gpu = choose_gpu(opts.gpu)
    args = cmake_args(gpu, opts.cuda_arch, opts.amx)
    key = build_key(args, opts.amx)
    label = wheel_label(gpu, key)
    if opts.print_key:
        print(json.dumps({"label": label, "compiled": f"{gpu}.{key_hash(key)}", **key}, indent=2))
        return 0

    raw_entry = opts.cache / "compiled" / f"{gpu}.{key_hash(key)}"
    entry = opts.cache / label
    with locked(opts.cache / f"{gpu}.{key_hash(key)}.lock"):
        wheels = sorted(entry.glob("*.whl")) if entry.is_dir() and not opts.force else []
        if wheels:
            wheel = wheels[0]
            log(f"using the cached build {wheel.name} ({entry})")
        else:
            raws = sorted(raw_entry.glob("*.whl")) if raw_entry.is_dir() and not opts.force else []
            found = (raws[0], frozenset[str]()) if raws else None
            if found is None and not opts.force:
                found = reusable_compile(opts.cache / "compiled", key)
            if found is None:
                shutil.rmtree(raw_entry, ignore_errors=True)
                sdist = find_sdist(opts.python, opts.cache, opts.sdist)
                found = (compile_wheel(opts.python, key, raw_entry, opts.jobs, opts.amx, sdist), frozenset())
            raw, drop = found
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(parents=True)
            wheel = package_wheel(raw, label, entry, drop)
            info_file = raw.parent / "build-info.json"
            if info_file.is_file():
                info = json.loads(info_file.read_text())
                if drop:
                    info["x86_variants"] = [v for v in info.get("x86_variants") or [] if v not in drop]
                    info["dropped_variants"] = key["dropped_variants"]
                    info["packaged_from"] = raw.parent.name
                (entry / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
            log(f"packaged {wheel.name}" + (f" from {raw.parent.name}, without {' '.join(sorted(drop))}"
                                            if drop else ""))
    if opts.no_install:
        print(wheel)
        return 0
    want = f"{LLAMA_CPP_PYTHON}+bendi.{label}"
    if installed_version(opts.python) == want:
        log(f"llama-cpp-python {want} is already installed")
        return 0
    # --no-deps: its dependencies (numpy, jinja2, diskcache, typing-extensions) come with bendi's
    # own install; --force-reinstall replaces a same-version wheel built elsewhere
    proc = subprocess.run([opts.python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                           str(wheel)])
    if proc.returncode != 0:
        fail(f"pip could not install {wheel}")
    log(f"installed llama-cpp-python {want}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
