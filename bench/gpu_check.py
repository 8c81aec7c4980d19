"""GPU check for the llama.cpp engine: build with CUDA, offload the bundled model, measure it.

For a machine with an NVIDIA GPU; needs no internet once the prerequisites below are there. Steps,
each with its own time limit, each reported as it ends (a failed step says why and what to do;
later steps that need it are skipped):

    1 preflight  nvidia-smi lists a GPU; nvcc; the llama-cpp-python source (for the build); bendi
    2 build      scripts/build_llama.py --gpu cuda for this GPU's architecture, installed into
                 this Python environment (skipped with --skip-build, or when the installed build
                 already has CUDA)
    3 backend    llama.cpp loads its CUDA backend and sees the GPU (what `bendi doctor` shows)
    4 decode     the bundled model in bendi's engine, placed as the planner says (all layers on
                 the GPU): layers offloaded (bendi's placement and llama.cpp's own log line), and
                 single-stream decode tokens/s, GPU against CPU (n_gpu_layers=0, same build)
    5 serve      `bendi serve --slots 32` with the GPU placement: aggregate output tokens/s of
                 streaming chat requests at concurrency 1, 8 and 32

Prints a summary table and writes bench/results/gpu_check.json.

    .venv/bin/python bench/gpu_check.py                        # everything (build: 10-20 min on 16 cores)
    .venv/bin/python bench/gpu_check.py --skip-build           # measure the installed build
    .venv/bin/python bench/gpu_check.py --sdist /path/llama_cpp_python-0.3.36.tar.gz
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import build_llama  # noqa: E402 - scripts/build_llama.py: nvcc and GPU discovery, the build itself

from results_file import write_results  # noqa: E402

MODEL = "smollm2:135m"
PROMPT = "Write a detailed guide to growing tomatoes at home."


class StepFailed(Exception):
    """A step could not finish; the message says why and what to do."""


def say(text: str) -> None:
    print(text, flush=True)


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise StepFailed(f"timed out after {timeout:.0f} s: {' '.join(cmd[:4])} ...") from exc


# -- 1 preflight -------------------------------------------------------------------------------

def preflight(args: argparse.Namespace) -> dict[str, Any]:
    if not shutil.which("nvidia-smi"):
        raise StepFailed("nvidia-smi not found: this check needs a machine with an NVIDIA GPU and its driver")
    out = run(["nvidia-smi", "--query-gpu=index,name,memory.total,compute_cap,driver_version",
               "--format=csv,noheader"], 60)
    gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not gpus:
        raise StepFailed(f"nvidia-smi lists no GPU: {(out.stderr or out.stdout).strip()[-300:]}")
    for g in gpus:
        say(f"  GPU {g}")
    facts: dict[str, Any] = {"gpus": gpus, "compute_caps": build_llama.nvidia_compute_caps()}
    try:
        import llama_cpp

        import bendi  # noqa: F401
    except ImportError as exc:
        raise StepFailed(f"{exc}: run this with the Python of bendi's environment (.venv/bin/python after "
                         "`make install`; offline, install from a wheelhouse carried over)") from exc
    facts["llama_cpp_python"] = str(llama_cpp.__version__)
    if not args.skip_build:
        nvcc = build_llama.find_nvcc()
        facts["nvcc"] = nvcc
        if nvcc is None:
            raise StepFailed("nvcc not found (the CUDA toolkit); install it or set CUDA_HOME, or rerun with "
                             "--skip-build to measure the installed build")
        ver = run([nvcc, "--version"], 60).stdout.strip().splitlines()
        say(f"  nvcc {nvcc}: {ver[-1] if ver else '?'}")
        cached = Path(args.cache) / "sdist" / build_llama.SDIST_NAME
        if not (args.sdist or cached.is_file()):
            say(f"  no {build_llama.SDIST_NAME} in {cached.parent}: the build will try pip download "
                "(fails offline; pass --sdist PATH)")
    return facts


# -- 2 build -----------------------------------------------------------------------------------

def has_cuda_build() -> bool:
    out = run([sys.executable, "-c", "from bendi.runtime.llama import build as buildinfo; print(buildinfo.engine_build().to_dict())"],
              300)
    return "'CUDA'" in out.stdout


def build(args: argparse.Namespace, caps: list[str]) -> str:
    if has_cuda_build():
        say("  the installed llama.cpp build already has CUDA; not rebuilding (use --force-build to)")
        if not args.force_build:
            return "already installed"
    arch = args.cuda_arch or ";".join(caps)
    cmd = [sys.executable, str(ROOT / "scripts" / "build_llama.py"), "--python", sys.executable,
           "--gpu", "cuda", "--cache", str(args.cache)]
    if arch:
        cmd += ["--cuda-arch", arch]
    if args.sdist:
        cmd += ["--sdist", str(args.sdist)]
    say(f"  {' '.join(cmd)}  (time limit {args.build_timeout} s)")
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, timeout=args.build_timeout, text=True, stdout=sys.stdout, stderr=sys.stderr)
    except subprocess.TimeoutExpired as exc:
        raise StepFailed(f"the CUDA build took more than {args.build_timeout} s; its log is in {args.cache} "
                         "(rerun with a larger --build-timeout, or fewer architectures with --cuda-arch)") from exc
    if proc.returncode != 0:
        raise StepFailed(f"the CUDA build failed (exit {proc.returncode}); the lines above and the log in "
                         f"{args.cache} say why")
    return f"built in {time.monotonic() - started:.0f} s"


# -- 3 backend ---------------------------------------------------------------------------------

def backend_facts() -> dict[str, Any]:
    code = "import json; from bendi.runtime.llama import build as buildinfo; print(json.dumps(buildinfo.engine_build().to_dict()))"
    out = run([sys.executable, "-c", code], 300)
    if out.returncode != 0:
        raise StepFailed(f"llama.cpp did not load: {out.stderr.strip()[-800:]}")
    build = json.loads(out.stdout.strip().splitlines()[-1])
    say(f"  llama-cpp-python {build['version']}; backends {', '.join(build['backends'])}; "
        f"CPU variant {build['cpu_variant']}")
    gpus = [d for d in build["devices"] if d["type"] in ("gpu", "igpu")]
    for d in gpus:
        say(f"  device {d['name']}: {d['description']}, {d['memory_free'] / 1e9:.1f} GB free")
    if "CUDA" not in build["gpu_backends"]:
        raise StepFailed("this llama.cpp build has no CUDA backend (run without --skip-build)")
    if "CUDA" in build["gpu_backends_not_loaded"] or not gpus:
        raise StepFailed("the CUDA backend is built but llama.cpp sees no GPU: the driver is missing or older "
                         "than the CUDA toolkit the build used (nvidia-smi shows the driver's CUDA version)")
    return build


# -- 4 decode ----------------------------------------------------------------------------------

def decode_worker(gpu_layers: str, max_tokens: int) -> None:
    """In a subprocess: load the bundled model with this placement, decode, print JSON."""
    from bendi.runtime.llama import LlamaModel, LoadOptions
    from bendi.runtime.types import ChatRequest, Done, SamplingParams
    from bendi.store import bundled_model_path

    layers = None if gpu_layers == "plan" else int(gpu_layers)
    with LlamaModel(bundled_model_path(), LoadOptions(ctx=1024, slots=1, gpu_layers=layers)) as model:
        results = []
        for i in range(3):  # the first one warms up (CUDA graphs, first-touch pages)
            req = ChatRequest(model=MODEL, messages=[{"role": "user", "content": PROMPT}],
                              sampling=SamplingParams(temperature=0.0), max_tokens=16 if i == 0 else max_tokens)
            done = next(ev for ev in model.generate(req) if isinstance(ev, Done))
            if i:
                results.append(done.usage.completion_tokens / done.decode_seconds if done.decode_seconds else 0.0)
        print(json.dumps({"placement": model.placement.describe(), "gpu_layers": model.placement.gpu_layers,
                          "n_layers": model.placement.n_layers, "decode_tps": max(results)}))


def decode(gpu_layers: str, max_tokens: int, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, BENDI_LLAMA_LOG="1")  # llama.cpp's own log on stderr: its offload line
    out = run([sys.executable, __file__, "--decode-worker", gpu_layers, "--max-tokens", str(max_tokens)], timeout, env)
    if out.returncode != 0:
        raise StepFailed(f"the engine failed with gpu_layers={gpu_layers}: {out.stderr.strip()[-1500:]}")
    data = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    m = re.search(r"offloaded (\d+)/(\d+) layers to GPU", out.stderr)
    data["llama_cpp_says"] = m.group(0) if m else "(no offload line in llama.cpp's log)"
    return data


# -- 5 serve -----------------------------------------------------------------------------------

def serve_levels(levels: list[int], max_tokens: int, timeout: float) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "bench"))
    from tests.server_util import ServerProcess

    from bendi.store import bundled_model_path
    from serve import PROMPTS, WARMUP, TokenCounter, run_level

    counter = TokenCounter(str(bundled_model_path()))
    out = []
    with tempfile.TemporaryDirectory(prefix="bendi-gpu-check-") as tmp:
        slots = str(max(levels))
        server = ServerProcess(Path(tmp), "--slots", slots, "--ctx", "512", "--preload", MODEL).wait_ready(300)
        try:
            asyncio.run(asyncio.wait_for(run_level(server.url, 2, 2, 16, counter, 0, WARMUP), timeout))
            for c in levels:
                level = asyncio.run(asyncio.wait_for(
                    run_level(server.url, c, 2 * c, max_tokens, counter, 0, PROMPTS), timeout))
                say(f"  c={c}: {level['agg_tps']:.0f} tok/s aggregate, TTFT p50 {level['ttft_p50_ms']:.0f} ms"
                    + (f", FAILED {level['failed']}: {level['errors']}" if level["failed"] else ""))
                out.append(level)
        except TimeoutError as exc:
            raise StepFailed(f"a concurrency level took more than {timeout:.0f} s; server log:\n"
                             f"{server.output()[-1500:]}") from exc
        finally:
            server.stop()
        placement = re.findall(r"loaded .*", server.output())
        if placement:
            say(f"  server: {placement[-1]}")
    return out


# -- main --------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--skip-build", action="store_true", help="measure the installed build as it is")
    ap.add_argument("--force-build", action="store_true", help="rebuild even if the installed build has CUDA")
    ap.add_argument("--sdist", type=Path, help=f"a copy of {build_llama.SDIST_NAME} (offline machines)")
    ap.add_argument("--cuda-arch", help='CMAKE_CUDA_ARCHITECTURES (default: this machine\'s GPUs, e.g. "90")')
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "bendi" / "llama-wheels"))
    ap.add_argument("--build-timeout", type=int, default=2400)
    ap.add_argument("--step-timeout", type=int, default=600, help="time limit of each measuring step")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    ap.add_argument("--decode-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.decode_worker:
        decode_worker(args.decode_worker, args.max_tokens)
        return 0

    started = time.time()
    report: dict[str, Any] = {"steps": {}}

    def step(name: str, fn: Any) -> Any:
        say(f"\n[{name}]")
        t0 = time.monotonic()
        try:
            value = fn()
            report["steps"][name] = {"ok": True, "seconds": round(time.monotonic() - t0, 1)}
            return value
        except StepFailed as exc:
            say(f"  FAILED: {exc}")
            report["steps"][name] = {"ok": False, "error": str(exc), "seconds": round(time.monotonic() - t0, 1)}
            return None

    facts = step("1 preflight", lambda: preflight(args))
    report["preflight"] = facts
    if facts is not None and not args.skip_build:
        report["build"] = step("2 build", lambda: build(args, facts["compute_caps"]))
    backend = step("3 backend", backend_facts) if facts is not None else None
    report["backend"] = backend
    if backend is not None:
        gpu = step("4 decode on GPU", lambda: decode("plan", args.max_tokens, args.step_timeout))
        cpu = step("4 decode on CPU", lambda: decode("0", args.max_tokens, args.step_timeout))
        report["decode"] = {"gpu": gpu, "cpu": cpu}
        for label, d in (("GPU", gpu), ("CPU", cpu)):
            if d:
                say(f"  {label}: {d['decode_tps']:.0f} tok/s; bendi placed it {d['placement']}; "
                    f"llama.cpp: {d['llama_cpp_says']}")
        levels = [int(c) for c in args.concurrency.split(",")]
        report["serve"] = step("5 serve", lambda: serve_levels(levels, args.max_tokens, args.step_timeout))

    say("\nsummary")
    for name, s in report["steps"].items():
        say(f"  {name:<18} {'ok' if s['ok'] else 'FAILED'} ({s['seconds']} s)" + ("" if s["ok"] else f": {s['error'][:200]}"))
    dec = report.get("decode") or {}
    if dec.get("gpu") and dec.get("cpu"):
        say(f"  offloaded layers   {dec['gpu']['gpu_layers']}/{dec['gpu']['n_layers'] + 1} ({dec['gpu']['llama_cpp_says']})")
        say(f"  decode, 1 stream   GPU {dec['gpu']['decode_tps']:.0f} tok/s, CPU {dec['cpu']['decode_tps']:.0f} tok/s, "
            f"{dec['gpu']['decode_tps'] / max(dec['cpu']['decode_tps'], 1e-9):.1f}x")
    for level in report.get("serve") or []:
        say(f"  served c={level['concurrency']:<3}      {level['agg_tps']:.0f} tok/s aggregate")
    write_results(args.out, "gpu_check", started, **report)
    return 0 if all(s["ok"] for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
