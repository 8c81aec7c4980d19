"""Serving benchmark: bendi with continuous batching against bendi without it and llama_cpp.server.

For the bundled model and concurrency 1, 4 and 8, measures aggregate output tokens/s, time to
first token (p50, p95) and per-token latency (inter-token time) through the OpenAI streaming API,
with the same prompts, max_tokens, greedy sampling, context per sequence and threads for all
three servers:

    bendi          python -m bendi serve --slots 8   (continuous batching)
    bendi-slots1   python -m bendi serve --slots 1   (batching off: one sequence at a time)
    llama-cpp      python -m llama_cpp.server        (llama-cpp-python's own server)

One server runs at a time (two would share the two cores); each is warmed up, driven through
every concurrency level, and stopped. With --rounds > 1 the servers alternate round by round and
the figures are medians over rounds, with the spread.

    .venv/bin/python bench/serve.py            # about 4 minutes
    .venv/bin/python bench/serve.py --quick    # about 1.5 minutes
    .venv/bin/python bench/serve.py --quantize q8_0   # the same, on a Q8_0 copy of the model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))  # tests.server_util starts bendi serve the way the API tests do

from tests.server_util import ServerProcess, free_port  # noqa: E402

from results_file import write_results  # noqa: E402

MODEL = "smollm2:135m"
# Different user prompts, each of which SmolLM2-135M answers at length under greedy decoding, so
# nearly every request runs to max_tokens (neither server can ignore end-of-sequence).
PROMPTS = [
    "Write a detailed guide to growing tomatoes at home.",
    "Describe the history of the Roman Empire from its founding to its fall.",
    "Explain in detail how a steam engine works, step by step.",
    "What are the main differences between Python and C? Explain thoroughly.",
    "Write an essay about the importance of sleep for students.",
    "Tell me everything you know about the planets of the solar system.",
    "List twenty ideas for a weekend trip and explain each one.",
    "Write a long story about a dragon who learns to bake bread.",
]
WARMUP = ["Say hello.", "Name a colour."]
SERVERS = {
    "bendi": "bendi serve --slots 8 (batching)",
    "bendi-slots1": "bendi serve --slots 1 (batching off)",
    "llama-cpp": "llama_cpp.server",
}


@dataclass
class Result:
    ok: bool
    tokens: int = 0
    ttft: float = 0.0
    itl: float = 0.0  # mean inter-token time of this request
    finish: str = ""
    error: str = ""


class LlamaCppServer:
    """`python -m llama_cpp.server` on a free port."""

    def __init__(self, home: Path, model_path: str, ctx: int, threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.log = (home / "server.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server", "--model", model_path,
                "--model_alias", MODEL, "--port", str(self.port), "--n_ctx", str(ctx),
                "--n_threads", str(threads), "--n_threads_batch", str(threads),
                # Its default cuts a running stream short whenever another request arrives; a
                # fair throughput comparison lets every request finish, queued behind the others.
                "--interrupt_requests", "False", "--verbose", "False",
            ],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 120.0) -> LlamaCppServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {(self.home / 'server.log').read_text()}")
            try:
                if httpx.get(self.url + "/v1/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("llama_cpp.server not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class TokenCounter:
    """Counts generated tokens with the model's own vocabulary.

    llama_cpp.server's stream carries no usage, so every server's output is counted the same way:
    max_tokens when the finish reason is "length", else the tokens of the text.
    """

    def __init__(self, model_path: str) -> None:
        import llama_cpp

        # vocab_only: no llama context, so no thread pool competing with the server under test
        self._llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)

    def count(self, text: str, finish: str, max_tokens: int) -> int:
        if finish == "length":
            return max_tokens
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=True))


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int,
                      counter: TokenCounter) -> Result:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 1234,
        "stream": True,
    }
    t0 = time.perf_counter()
    first = last = 0.0
    chunks = 0
    parts: list[str] = []
    finish = ""
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                return Result(False, error=f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}")
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    return Result(False, error=str(data["error"])[:200])
                if not data.get("choices"):
                    continue
                choice = data["choices"][0]
                finish = choice.get("finish_reason") or finish
                text = (choice.get("delta") or {}).get("content")
                if text:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
                    parts.append(text)
    except httpx.HTTPError as exc:
        return Result(False, error=f"{type(exc).__name__}: {exc}")
    tokens = counter.count("".join(parts), finish, max_tokens)
    if not first:
        return Result(False, error="no content", finish=finish)
    # Per-token latency: the stream's time after the first token spread over the tokens after it.
    itl = (last - first) / (tokens - 1) if tokens > 1 else 0.0
    return Result(True, tokens=tokens, ttft=first - t0, itl=itl, finish=finish)


async def run_level(url: str, concurrency: int, n_requests: int, max_tokens: int,
                    counter: TokenCounter, offset: int, prompts: list[str] = PROMPTS) -> dict[str, Any]:
    """`n_requests` requests, `concurrency` of them in flight at any moment."""
    todo = list(range(n_requests))
    results: list[Result] = []
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=limits) as client:

        async def worker() -> None:
            while todo:
                i = todo.pop(0)
                prompt = prompts[(offset + i) % len(prompts)]
                results.append(await one_request(client, url, prompt, max_tokens, counter))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ok = [r for r in results if r.ok]
    ttfts = sorted(r.ttft for r in ok)
    return {
        "concurrency": concurrency,
        "requests": n_requests,
        "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:3],
        "tokens": sum(r.tokens for r in ok),
        "length_finishes": sum(r.finish == "length" for r in ok),
        "wall_s": wall,
        "agg_tps": sum(r.tokens for r in ok) / wall if wall else 0.0,
        "ttft_p50_ms": 1000 * pct(ttfts, 50),
        "ttft_p95_ms": 1000 * pct(ttfts, 95),
        "itl_p50_ms": 1000 * pct(sorted(r.itl for r in ok), 50),
    }


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: with 8-24 samples p95 is close to the max)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def start_server(name: str, home: Path, cfg: dict[str, Any]) -> Any:
    if name == "llama-cpp":
        return LlamaCppServer(home, cfg["model_path"], cfg["ctx"], cfg["threads"]).wait_ready()
    slots = "8" if name == "bendi" else "1"
    if cfg["quantize"]:  # the re-quantized copy, registered the way `bendi create` does
        from bendi.store import ModelStore

        ModelStore(home / "models").import_file(cfg["model_path"], MODEL)
    # A fixed thread count is passed on; otherwise bendi tunes its threads itself.
    env = {"BENDI_THREADS": str(cfg["threads"])} if cfg["fixed_threads"] else None
    return ServerProcess(
        home, "--slots", slots, "--ctx", str(cfg["ctx"]), "--preload", MODEL, env=env,
    ).wait_ready()


def bench_server(name: str, cfg: dict[str, Any], round_no: int) -> list[dict[str, Any]]:
    counter = cfg["counter"]
    with tempfile.TemporaryDirectory(prefix=f"bendi-bench-{name}-") as tmp:
        server = start_server(name, Path(tmp), cfg)
        try:
            # Warm-up: model pages, thread pools, the first graph build; and for bendi, several
            # sequences at once so the batched graph is built before it is timed. Its prompts
            # are not the measured ones, so llama_cpp.server's prompt cache (it reuses the
            # longest common prefix of the previous prompt) gets no head start beyond the
            # chat template's shared system prefix, which it keeps throughout.
            asyncio.run(run_level(server.url, 2, 2, 16, counter, 0, WARMUP))
            levels = []
            for c in cfg["concurrency"]:
                level = asyncio.run(run_level(
                    server.url, c, c * cfg["per_slot"], cfg["max_tokens"], counter, round_no))
                print(
                    f"  {name:<13} c={c}: {level['agg_tps']:6.1f} tok/s  TTFT p50 "
                    f"{level['ttft_p50_ms']:7.0f} ms  ITL p50 {level['itl_p50_ms']:5.1f} ms"
                    + (f"  FAILED {level['failed']}: {level['errors']}" if level["failed"] else ""),
                    flush=True,
                )
                levels.append(level)
            return levels
        finally:
            server.stop()


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(rounds: list[dict[str, list[dict[str, Any]]]], concurrency: list[int]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name in SERVERS:
        table[name] = {}
        for i, c in enumerate(concurrency):
            runs = [rnd[name][i] for rnd in rounds]
            entry: dict[str, Any] = {"runs": len(runs)}
            for key in ("agg_tps", "ttft_p50_ms", "ttft_p95_ms", "itl_p50_ms"):
                vals = [r[key] for r in runs]
                entry[key] = med(vals)
                entry[key + "_range"] = [min(vals), max(vals)]
            entry["failed"] = sum(r["failed"] for r in runs)
            entry["length_share"] = sum(r["length_finishes"] for r in runs) / max(1, sum(r["requests"] for r in runs))
            table[name][str(c)] = entry

    def ratios(a: str, b: str, c: int) -> list[float]:
        i = concurrency.index(c)
        # Paired per round: both servers of a round ran minutes apart under similar load.
        return [rnd[a][i]["agg_tps"] / rnd[b][i]["agg_tps"] for rnd in rounds if rnd[b][i]["agg_tps"]]

    targets: dict[str, Any] = {}
    top = max(concurrency)
    for base, goal in (("bendi-slots1", 1.5), ("llama-cpp", 1.5)):
        r = ratios("bendi", base, top)
        targets[f"c{top} bendi / {base}"] = {"median": med(r), "range": [min(r), max(r)], "target": f">= {goal}x"}
    if 1 in concurrency:
        r = ratios("bendi", "bendi-slots1", 1)
        targets["c1 bendi / bendi-slots1"] = {"median": med(r), "range": [min(r), max(r)], "target": ">= 0.95x"}
        r = ratios("bendi", "llama-cpp", 1)
        targets["c1 bendi / llama-cpp"] = {"median": med(r), "range": [min(r), max(r)], "target": "(info)"}
    return {"table": table, "ratios": targets}


def print_table(summary: dict[str, Any], cfg: dict[str, Any], rounds: int) -> None:
    print(
        f"\nbendi serving benchmark: {MODEL} (SmolLM2-135M {cfg['weights']}), OpenAI streaming API, "
        f"max_tokens={cfg['max_tokens']}, ctx/sequence={cfg['ctx']}, threads={cfg['threads']}, greedy, "
        f"{cfg['per_slot']} x concurrency requests per level, {rounds} round(s)\n"
    )
    head = (f"{'server':<36} {'conc':>4} {'agg tok/s':>9} {'(range)':>11} {'TTFT p50':>9} "
            f"{'TTFT p95':>9} {'ITL p50':>8} {'failed':>6}")
    print(head)
    print("-" * len(head))
    for name, label in SERVERS.items():
        for c, e in summary["table"][name].items():
            lo, hi = e["agg_tps_range"]
            print(f"{label:<36} {c:>4} {e['agg_tps']:>9.1f} {f'{lo:.0f}-{hi:.0f}':>11} "
                  f"{e['ttft_p50_ms']:>7.0f}ms {e['ttft_p95_ms']:>7.0f}ms {e['itl_p50_ms']:>6.1f}ms "
                  f"{e['failed']:>6}")
    print("\nratios of aggregate throughput (median of per-round ratios, range):")
    for key, r in summary["ratios"].items():
        print(f"  {key:<28} {r['median']:5.2f}x  ({r['range'][0]:.2f}-{r['range'][1]:.2f})  target {r['target']}")
    print(
        "\nTTFT: request sent to first content chunk. ITL: per request, (last chunk - first chunk) /"
        " (tokens - 1); the median over requests.\n"
        "Tokens: max_tokens when finish_reason is 'length' (neither server can ignore EOS), else the"
        " text's tokens.\n"
        "Default kernels: bendi lets llama.cpp pick flash attention (on for CPU); llama_cpp.server"
        " runs with its default flash_attn=False\n"
        "(bench/engine.py measures that difference). llama_cpp.server runs one request at a time"
        " and here with --interrupt_requests False,\nso queued requests wait instead of cutting the"
        " running stream short."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="1 round, 64 tokens, concurrency x 1 requests")
    ap.add_argument("--rounds", type=int, help="alternating rounds over the three servers (default 2)")
    ap.add_argument("--max-tokens", type=int, help="tokens per request (default 128, quick 64)")
    ap.add_argument("--per-slot", type=int, help="requests per level = this x concurrency (default 2)")
    ap.add_argument("--ctx", type=int, default=512, help="context per sequence (prompt + max_tokens fit)")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--quantize", metavar="TYPE",
                    help="serve a copy of the bundled model re-quantized to TYPE (e.g. q8_0), "
                         "made with llama.cpp's quantizer as `bendi create --quantize` does")
    ap.add_argument("--threads", type=int,
                    help="llama.cpp threads for every server (default: bendi's default; on a machine "
                         "busy with other work, fewer threads than cores measure more steadily)")
    ap.add_argument("--out", type=Path, help="default bench/results/serve.json (serve-TYPE.json)")
    args = ap.parse_args()
    out = args.out or RESULTS / (f"serve-{args.quantize}.json" if args.quantize else "serve.json")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from bendi.runtime.llama import default_threads
    from bendi.store import bundled_model_path

    rounds = args.rounds or (1 if args.quick else 2)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    model_path = str(bundled_model_path())
    weights = "Q4_1"
    workdir = tempfile.TemporaryDirectory(prefix="bendi-bench-model-")
    if args.quantize:
        from bendi.runtime.quantize import check_target, quantize_file
        from bendi.store.gguf import read_gguf

        global MODEL
        source = read_gguf(model_path)
        target = check_target(args.quantize, source)
        model_path = str(Path(workdir.name) / f"smollm2-135m-{target}.gguf")
        quantize_file(source, Path(model_path), target)
        MODEL, weights = f"smollm2:135m-{target}", target.upper()
    cfg: dict[str, Any] = {
        "model_path": model_path,
        "quantize": args.quantize,
        "weights": weights,
        "ctx": args.ctx,
        # bendi serve uses default_threads(); llama_cpp.server is given the same number
        # (its own default is half the logical CPUs).
        "threads": args.threads or default_threads(),
        "fixed_threads": args.threads is not None,
        "max_tokens": args.max_tokens or (64 if args.quick else 128),
        "per_slot": args.per_slot or (1 if args.quick else 2),
        "concurrency": concurrency,
        "counter": TokenCounter(model_path),
    }
    started = time.time()
    names = list(SERVERS)
    results: list[dict[str, list[dict[str, Any]]]] = []
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        rnd: dict[str, list[dict[str, Any]]] = {}
        for name in order:
            print(f"round {r + 1}/{rounds}: {SERVERS[name]}", flush=True)
            rnd[name] = bench_server(name, cfg, r)
        results.append(rnd)

    summary = summarise(results, concurrency)
    print_table(summary, cfg, rounds)
    write_results(out, "serve", started,
                  config={k: v for k, v in cfg.items() if k != "counter"} | {"rounds": rounds},
                  **summary, raw=results)
    workdir.cleanup()


if __name__ == "__main__":
    main()
