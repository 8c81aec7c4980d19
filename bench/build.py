"""What the portable llama.cpp build costs or gains against a -march=native build, on this machine.

bendi installs llama.cpp with ggml's CPU variants (scripts/build_llama.py): one module per CPU
class, the best loaded at start. pip's default build compiles for the building CPU instead
(-march=native). This runs llama_decode on the bundled model (the measurement of bench/kernels.py)
under each build, in alternating rounds, each in its own process (LLAMA_CPP_LIB_PATH points
llama-cpp-python at a build's libraries):

    decode   tokens/s of one sequence (1000 / median step of 1 sequence)
    batch8   tokens/s of 8 sequences decoding together (one llama_decode per step)
    prefill  tokens/s of one prompt step of 8 x 35 tokens

and prints each build's figures, the CPU variant it ran, and the ratio portable / native per
round (median and range). `--variants` adds the portable build pinned to lower variants (what an
older CPU would run), to show what the dispatch buys.

The native build is a llama-cpp-python wheel pip compiled on this machine with default flags:
found in pip's wheel cache, given with --native-wheel, or built with --build-native (minutes).

    .venv/bin/python bench/build.py                       # about 2 minutes
    .venv/bin/python bench/build.py --variants x64        # also pin lower variants
    .venv/bin/python bench/build.py --inspect             # AMX / AVX-512 instructions per variant
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from results_file import write_results

RESULTS = Path(__file__).resolve().parent / "results"
HERE = Path(__file__).resolve().parent


def worker(steps: int, threads: int) -> None:
    """In a fresh process whose LLAMA_CPP_LIB_PATH selects the build: measure and print JSON."""
    from bendi.runtime.llama import build as buildinfo
    from bendi.store import bundled_model_path
    from kernels import PROMPT, SLOTS, measure

    buildinfo.ensure_loaded()
    info = buildinfo.system_info()
    figures = measure(str(bundled_model_path()), threads, steps)
    variants = [v for m in buildinfo.loaded_modules() if (v := buildinfo.variant_of(m))]
    print(json.dumps({
        "variant": variants[0] if variants else "built-in",
        "features": buildinfo.cpu_features(info),
        "repack": "REPACK = 1" in info,
        "decode": 1000 / figures["step1_ms"],
        "batch8": SLOTS * 1000 / figures["step8_ms"],
        "prefill": SLOTS * PROMPT * 1000 / figures["pp_ms"],
    }))


def run_worker(lib: Path, steps: int, threads: int) -> dict[str, Any]:
    env = dict(os.environ, LLAMA_CPP_LIB_PATH=str(lib))
    proc = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(steps), "--threads", str(threads)],
                          capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"worker on {lib} failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def installed_lib() -> Path:
    import llama_cpp.llama_cpp as raw

    return Path(raw._base_path)


def native_wheel(given: Path | None, build: bool, workdir: Path) -> Path | None:
    """A llama-cpp-python wheel of the installed version built with default (native) flags."""
    import llama_cpp

    version = str(llama_cpp.__version__).split("+")[0]
    if given:
        return given
    out = subprocess.run([sys.executable, "-m", "pip", "cache", "list", f"llama_cpp_python-{version}",
                          "--format=abspath"], capture_output=True, text=True).stdout.split()
    found = [Path(p) for p in out if p.endswith(".whl")]
    if found:
        return found[0]
    if not build:
        return None
    print(f"building llama-cpp-python {version} with pip's default (native) flags; this takes a while")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(workdir),
                    f"llama-cpp-python=={version}"], check=True)
    return next(workdir.glob("llama_cpp_python-*.whl"))


def unpack_lib(wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.startswith("llama_cpp/lib/"):
                zf.extract(name, dest)
    return dest / "llama_cpp" / "lib"


def pinned_variant(lib: Path, variant: str, dest: Path) -> Path:
    """A copy of the portable build's libraries with only one CPU variant: what that CPU class runs."""
    dest.mkdir(parents=True)
    for f in lib.iterdir():
        if "ggml-cpu-" in f.name and f"ggml-cpu-{variant}." not in f.name:
            continue
        shutil.copy2(f, dest / f.name)
    if not any(dest.glob(f"*ggml-cpu-{variant}.*")):
        raise SystemExit(f"the installed build has no {variant} variant (see `bendi doctor`)")
    return dest


#: AMX instructions (Intel SDM): tile configuration, loads/stores and the tile dot products
AMX_MNEMONICS = ("ldtilecfg", "sttilecfg", "tileloadd", "tileloaddt1", "tilestored", "tilezero", "tilerelease",
                 "tdpbssd", "tdpbsud", "tdpbusd", "tdpbuud", "tdpbf16ps", "tdpfp16ps")


def _mnemonic(line: str) -> str:
    """The instruction of one objdump line, without a {vex}/{evex} encoding hint."""
    words = [w for w in line.split("\t")[1].split() if not w.startswith("{")]
    return words[0] if words else ""


def inspect_variants(lib: Path) -> list[dict[str, Any]]:
    """Per CPU variant module: size, and instructions by kind in its disassembly (objdump)."""
    if not shutil.which("objdump"):
        raise SystemExit("--inspect needs objdump (binutils)")
    rows = []
    for path in sorted(lib.glob("*ggml-cpu*")):
        text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                              text=True, check=True).stdout
        lines = [ln for ln in text.splitlines() if ln.startswith(" ") and "\t" in ln]
        mnemonics = [_mnemonic(ln) for ln in lines]
        rows.append({
            "module": path.name,
            "bytes": path.stat().st_size,
            "instructions": len(lines),
            "amx": sum(m in AMX_MNEMONICS for m in mnemonics) + sum("%tmm" in ln for ln in lines),
            "zmm": sum("%zmm" in ln for ln in lines),
            "ymm": sum("%ymm" in ln for ln in lines),
            "vnni": sum(m.startswith(("vpdpbusd", "vpdpwssd")) for m in mnemonics),
        })
    return rows


def print_inspection(rows: list[dict[str, Any]]) -> None:
    print(f"{'module':<34} {'KB':>6} {'instr':>8} {'AMX':>5} {'zmm':>7} {'ymm':>7} {'vnni':>6}")
    for r in rows:
        print(f"{r['module']:<34} {r['bytes'] // 1024:>6} {r['instructions']:>8} {r['amx']:>5} {r['zmm']:>7} "
              f"{r['ymm']:>7} {r['vnni']:>6}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=48, help="decode steps per measurement")
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (default: physical cores)")
    ap.add_argument("--native-wheel", type=Path, help="a llama-cpp-python wheel built with native flags")
    ap.add_argument("--build-native", action="store_true", help="build one with pip if none is cached")
    ap.add_argument("--variants", default="", help="also run the portable build pinned to these variants")
    ap.add_argument("--inspect", action="store_true",
                    help="disassemble the installed build's CPU variants: AMX / AVX-512 / VNNI instruction counts")
    ap.add_argument("--out", type=Path, default=RESULTS / "build.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = args.threads or _default_threads()
    if args.worker:
        worker(args.steps, threads)
        return

    started = time.time()
    if args.inspect:
        rows = inspect_variants(installed_lib())
        print_inspection(rows)
        write_results(args.out.with_name("build-inspect.json"), "build-inspect", started, modules=rows)
        return
    work = Path(tempfile.mkdtemp(prefix="bendi-bench-build-"))
    try:
        builds: dict[str, Path] = {"portable": installed_lib()}
        wheel = native_wheel(args.native_wheel, args.build_native, work / "wheel")
        if wheel is None:
            print("no native llama-cpp-python wheel in pip's cache: pass --native-wheel or --build-native;"
                  " measuring the portable build alone")
        else:
            builds["native"] = unpack_lib(wheel, work / "native")
        for v in filter(None, args.variants.split(",")):
            builds[f"portable:{v}"] = pinned_variant(builds["portable"], v.strip(), work / f"pin-{v.strip()}")

        rounds: list[dict[str, dict[str, Any]]] = []
        for r in range(args.rounds):
            order = list(builds) if r % 2 == 0 else list(reversed(builds))
            rounds.append({name: run_worker(builds[name], args.steps, threads) for name in order})
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n} {rounds[-1][n]['decode']:.0f} tok/s" for n in builds))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarise(rounds, list(builds))
    print_table(summary, threads)
    write_results(args.out, "build", started, threads=threads, rounds=rounds, summary=summary,
                  native_wheel=str(wheel) if wheel else None)


def _default_threads() -> int:
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:
        return os.cpu_count() or 1


METRICS = ("decode", "batch8", "prefill")


def summarise(rounds: list[dict[str, dict[str, Any]]], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        first = rounds[0][name]
        out[name] = {"variant": first["variant"], "features": first["features"], "repack": first["repack"],
                     **{m: statistics.median(r[name][m] for r in rounds) for m in METRICS}}
        if name != "native" and "native" in names:
            ratios = {m: [r[name][m] / r["native"][m] for r in rounds] for m in METRICS}
            out[name]["vs_native"] = {m: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                      for m, v in ratios.items()}
    return out


def print_table(summary: dict[str, Any], threads: int) -> None:
    print(f"\nllama_decode on the bundled model, {threads} threads (tokens/s, median over rounds)\n")
    print(f"{'build':<18} {'variant':<12} {'decode':>8} {'batch8':>8} {'prefill':>8}   vs native (median, range)")
    for name, s in summary.items():
        rel = ""
        if "vs_native" in s:
            rel = "  ".join(f"{m} {v['median']:.2f}x ({v['min']:.2f}-{v['max']:.2f})"
                            for m, v in s["vs_native"].items())
        print(f"{name:<18} {s['variant']:<12} {s['decode']:>8.0f} {s['batch8']:>8.0f} {s['prefill']:>8.0f}   {rel}")
    for name, s in summary.items():
        print(f"  {name}: {' '.join(s['features'])}{' REPACK' if s['repack'] else ''}")


if __name__ == "__main__":
    main()
