"""Pull throughput against curl, and sha256 verification against sha256sum, on loopback.

One loopback HTTP server (tests/mirror.py, which answers with sendfile) serves a GGUF file under
a plain directory with a SHA256SUMS file. Rounds alternate, in rotated order:

- curl: `curl -s -o FILE URL` of the same file (no verification)
- curl + sha256sum: the same, then `sha256sum FILE` (what a careful person types by hand)
- bendi pull (N connections): the whole `bendi pull` path in-process (checksum file, HEAD,
  transfer with the sha256 computed as the bytes arrive, GGUF header check, registration) into a
  fresh BENDI_HOME each round

and, separately, the time to hash the file (page cache warm) with bendi's sha256_file against
`sha256sum`. Ratios are taken per round; medians and ranges are reported. Target: bendi pull at
>= 0.9x curl's throughput.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))  # tests.mirror is the loopback mirror the pull tests use
sys.path.insert(0, str(ROOT / "src"))

from tests.mirror import Mirror, MirrorServer, write_tiny_gguf  # noqa: E402

from bendi.config import Settings  # noqa: E402
from bendi.store import ModelStore  # noqa: E402
from bendi.store.blobs import sha256_file  # noqa: E402
from bendi.store.pull import Puller  # noqa: E402
from results_file import write_results  # noqa: E402


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def curl(url: str, out: Path) -> None:
    subprocess.run(["curl", "-s", "-f", "-o", str(out), url], check=True)


def bendi_pull(url: str, home: Path, connections: int) -> None:
    if home.exists():
        shutil.rmtree(home)
    settings = Settings.from_env({}, home=home, sources=f"bench=http:{url}", pull_connections=connections)
    Puller(settings, ModelStore(settings.models_dir)).pull("model.gguf", name="bench:latest")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the served file")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "pull.json")
    args = ap.parse_args()
    if shutil.which("curl") is None or shutil.which("sha256sum") is None:
        sys.exit("bench/pull.py needs curl and sha256sum on PATH")
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bendi-bench-pull-"))
    try:
        model = write_tiny_gguf(work / "model.gguf", n_floats=args.size_mb * 1024 * 1024 // 4)
        size = model.stat().st_size
        mirror = Mirror()
        mirror.add_plain("model.gguf", model)
        runs: dict[str, list[float]] = {}
        with MirrorServer(mirror) as server:
            url = server.url + "/files"
            target = work / "curl.out"
            contenders = {
                "curl": lambda: curl(f"{url}/model.gguf", target),
                "curl + sha256sum": lambda: (curl(f"{url}/model.gguf", target),
                                             subprocess.run(["sha256sum", str(target)], check=True,
                                                            capture_output=True)),
                "bendi pull (1 connection)": lambda: bendi_pull(url, work / "home", 1),
                "bendi pull (4 connections)": lambda: bendi_pull(url, work / "home", 4),
            }
            names = list(contenders)
            contenders["curl"]()  # warm the page cache and the server
            for r in range(args.rounds):
                order = names[r % len(names):] + names[: r % len(names)]
                for name in order:
                    runs.setdefault(name, []).append(timed(contenders[name]))
                    for leftover in (target, work / "home"):
                        if leftover.is_dir():
                            shutil.rmtree(leftover)
                        elif leftover.exists():
                            leftover.unlink()
        verify = {"bendi sha256_file": [], "sha256sum": []}  # type: dict[str, list[float]]
        for _ in range(args.rounds):
            verify["sha256sum"].append(timed(lambda: subprocess.run(
                ["sha256sum", str(model)], check=True, capture_output=True)))
            verify["bendi sha256_file"].append(timed(lambda: sha256_file(model)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    print(f"\nfile: {size / 1e9:.2f} GB over loopback, {args.rounds} rounds, {os.cpu_count()} CPUs\n")
    print(f"{'what':<28}{'median s':>10}{'MB/s':>10}{'vs curl (median, range)':>28}")
    for name, times in runs.items():
        ratios = [c / t for c, t in zip(runs["curl"], times, strict=True)]
        med = statistics.median(times)
        rows.append({"what": name, "seconds": times, "median_s": med, "mb_per_s": size / med / 1e6,
                     "vs_curl_median": statistics.median(ratios), "vs_curl_range": [min(ratios), max(ratios)]})
        print(f"{name:<28}{med:>10.2f}{size / med / 1e6:>10.0f}"
              f"{statistics.median(ratios):>14.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    print(f"\n{'verify (page cache warm)':<28}{'median s':>10}{'MB/s':>10}{'vs sha256sum':>28}")
    verify_rows = []
    for name, times in verify.items():
        ratios = [b / t for b, t in zip(verify["sha256sum"], times, strict=True)]
        med = statistics.median(times)
        verify_rows.append({"what": name, "seconds": times, "median_s": med,
                            "vs_sha256sum_median": statistics.median(ratios)})
        print(f"{name:<28}{med:>10.2f}{size / med / 1e6:>10.0f}{statistics.median(ratios):>27.2f}x")
    write_results(args.out, "pull", started, size_bytes=size, rounds=args.rounds, transfer=rows,
                  verify=verify_rows)


if __name__ == "__main__":
    main()
