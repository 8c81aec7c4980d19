"""Single-stream engine benchmark: bendi's LlamaModel against llama-cpp-python's high-level API.

Measures decode tokens/s and time to first token (TTFT) for the bundled model, one request at a
time, on the same prompts with the same max_tokens, n_ctx, threads and greedy sampling.

Every engine runs in its own subprocess and the subprocesses alternate (A B C, B C A, ...) for
several rounds: two llama.cpp contexts in one process would fight over cores with their thread
pools, and on a shared, noisy machine alternating spreads the noise over all engines alike.
Reported figures are medians; the ratio is taken per round (engines measured minutes apart
would see different neighbours) and its median and spread are reported.

    .venv/bin/python bench/engine.py            # about 2 minutes
    .venv/bin/python bench/engine.py --quick    # about 40 seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from results_file import write_results

RESULTS = Path(__file__).resolve().parent / "results"

# Prompts that make SmolLM2-135M write at length under greedy decoding, so every request decodes
# max_tokens; the last one is long, so TTFT also covers a real prefill.
PROMPTS = [
    "Write a detailed guide to growing tomatoes at home.",
    "Describe the history of the Roman Empire from its founding to its fall.",
    "Explain in detail how a steam engine works, step by step.",
    "Read this passage and then explain each of its points in your own words.\n\n"
    + " ".join(
        [
            "Rivers shape the land they cross: they carve valleys, carry sediment to the sea,",
            "and build fertile plains where they flood. Early cities grew beside rivers because",
            "water meant crops, trade and transport. Dams now store water for dry seasons and",
            "turn falling water into electricity, but they also trap sediment, block fish and",
            "change the life of the river downstream. Engineers and ecologists argue about how",
            "to balance these costs, and some old dams have been removed so that salmon can",
            "return to the streams where they were born. Meanwhile, cities that once turned",
            "their backs on polluted rivers are building parks and paths along the water.",
        ]
        * 2
    ),
]

# name -> (label, footnote marker); the order is the default-vs-default comparison first
ENGINES = {
    "bendi": "bendi LlamaModel (flash attn auto)",
    "bendi-fa-off": "bendi LlamaModel (flash attn off)",
    "llama-cpp-python": "llama-cpp-python Llama (flash attn off, its default)",
}
BASELINE = "llama-cpp-python"


# -- worker side: one engine, one process ---------------------------------------------------


def _measure(stream: Any, t0: float) -> tuple[float, float, str]:
    """Consume (text, finish) pairs; return (first content time, last content time, text)."""
    first = last = 0.0
    parts: list[str] = []
    for text in stream:
        if text:
            now = time.perf_counter()
            first = first or now
            last = now
            parts.append(text)
    return first - t0, last - t0, "".join(parts)


def _run_bendi(cfg: dict[str, Any], flash_attn: bool | None) -> list[dict[str, Any]]:
    from bendi.runtime.llama import LlamaModel, LoadOptions
    from bendi.runtime.types import ChatRequest, Done, SamplingParams, TextDelta

    # slots=1: one request at a time, and the context is exactly n_ctx like llama-cpp-python's
    # prompt_cache off: both engines prefill every prompt in full, so TTFT compares prefill speed.
    opts = LoadOptions(ctx=cfg["ctx"], slots=1, threads=cfg["threads"], flash_attn=flash_attn,
                       prompt_cache=False)
    out: list[dict[str, Any]] = []
    with LlamaModel(cfg["model"], opts) as model:
        for i, prompt in enumerate([PROMPTS[0], *cfg["prompts"]]):
            done: dict[str, Any] = {}

            def texts(req: ChatRequest, done: dict[str, Any] = done) -> Any:
                for ev in model.generate(req):
                    if isinstance(ev, TextDelta):
                        yield ev.text
                    elif isinstance(ev, Done):
                        done["tokens"] = ev.usage.completion_tokens
                        done["prompt_tokens"] = ev.usage.prompt_tokens
                        done["finish"] = ev.finish_reason

            req = ChatRequest(
                model="bench",
                messages=[{"role": "user", "content": prompt}],
                sampling=SamplingParams(temperature=0.0),
                max_tokens=8 if i == 0 else cfg["max_tokens"],
            )
            t0 = time.perf_counter()
            ttft, t_last, _ = _measure(texts(req), t0)
            if i == 0:  # warm-up: first-touch page faults, thread pool start
                continue
            out.append({"ttft": ttft, "t_last": t_last, **done})
    return out


def _run_llama_cpp_python(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=cfg["model"],
        n_ctx=cfg["ctx"],
        n_threads=cfg["threads"],
        n_threads_batch=cfg["threads"],
        verbose=False,
    )
    out: list[dict[str, Any]] = []
    for i, prompt in enumerate([PROMPTS[0], *cfg["prompts"]]):
        max_tokens = 8 if i == 0 else cfg["max_tokens"]
        # bendi runs with prompt_cache=False here; resetting makes both prefill the whole
        # prompt instead of llama-cpp-python reusing the chat template's shared prefix.
        llm.reset()
        done: dict[str, Any] = {}

        def texts(max_tokens: int = max_tokens, prompt: str = prompt, done: dict[str, Any] = done) -> Any:
            chunks = llm.create_chat_completion(
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=0.0,
                stream=True,
            )
            for chunk in chunks:
                choice = chunk["choices"][0]  # type: ignore[index]
                if choice.get("finish_reason"):
                    done["finish"] = choice["finish_reason"]
                yield choice["delta"].get("content")

        t0 = time.perf_counter()
        ttft, t_last, text = _measure(texts(), t0)
        if i == 0:
            continue
        # Its stream carries no usage: a "length" finish means max_tokens were generated,
        # otherwise count the text's tokens (the end-of-generation token is not counted, as in bendi).
        if done.get("finish") == "length":
            done["tokens"] = max_tokens
        else:
            done["tokens"] = len(llm.tokenize(text.encode(), add_bos=False, special=True))
        out.append({"ttft": ttft, "t_last": t_last, **done})
    return out


def worker(name: str, cfg: dict[str, Any]) -> None:
    if name == "llama-cpp-python":
        rows = _run_llama_cpp_python(cfg)
    else:
        rows = _run_bendi(cfg, None if name == "bendi" else False)
    for row in rows:
        # The first token's time belongs to TTFT; decode rate covers the tokens after it.
        span = row["t_last"] - row["ttft"]
        row["decode_tps"] = (row["tokens"] - 1) / span if row["tokens"] > 1 and span > 0 else 0.0
    print(json.dumps(rows))


# -- driver side ---------------------------------------------------------------------------


def run_worker(name: str, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--config", json.dumps(cfg)],
        capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    rows: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return rows


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(rounds: list[dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    engines: dict[str, Any] = {}
    for name in ENGINES:
        per_round_tps = [med([r["decode_tps"] for r in rnd[name]]) for rnd in rounds]
        per_round_ttft = [med([r["ttft"] for r in rnd[name]]) for rnd in rounds]
        all_rows = [r for rnd in rounds for r in rnd[name]]
        engines[name] = {
            "label": ENGINES[name],
            "decode_tps_median": med([r["decode_tps"] for r in all_rows]),
            "decode_tps_round_medians": per_round_tps,
            "ttft_ms_median": 1000 * med([r["ttft"] for r in all_rows]),
            "ttft_ms_round_medians": [1000 * t for t in per_round_ttft],
            "tokens_per_request": med([r["tokens"] for r in all_rows]),
            "finish_reasons": sorted({r.get("finish", "?") for r in all_rows}),
        }
    for name in ENGINES:
        e, b = engines[name], engines[BASELINE]
        # Paired per round: the two runs of one round are seconds apart and share the neighbours.
        tps_ratios = [a / c for a, c in zip(e["decode_tps_round_medians"], b["decode_tps_round_medians"], strict=True)]
        ttft_ratios = [a / c for a, c in zip(e["ttft_ms_round_medians"], b["ttft_ms_round_medians"], strict=True)]
        e["decode_ratio_median"] = med(tps_ratios)
        e["decode_ratio_range"] = [min(tps_ratios), max(tps_ratios)]
        e["ttft_ratio_median"] = med(ttft_ratios)
        e["ttft_ratio_range"] = [min(ttft_ratios), max(ttft_ratios)]
    return engines


def print_table(engines: dict[str, Any], cfg: dict[str, Any], rounds: int) -> None:
    print(
        f"\nbendi engine benchmark: {Path(cfg['model']).name}, {len(cfg['prompts'])} prompts x "
        f"{rounds} rounds, max_tokens={cfg['max_tokens']}, n_ctx={cfg['ctx']}, "
        f"threads={cfg['threads']}, greedy, one request at a time\n"
    )
    head = (
        f"{'engine':<52} {'decode tok/s':>12} {'round range':>13} {'ratio':>6} {'ratio range':>12}"
        f" {'TTFT ms':>8} {'ratio':>6}"
    )
    print(head)
    print("-" * len(head))
    for e in engines.values():
        lo, hi = min(e["decode_tps_round_medians"]), max(e["decode_tps_round_medians"])
        rlo, rhi = e["decode_ratio_range"]
        print(
            f"{e['label']:<52} {e['decode_tps_median']:>12.1f} {f'{lo:.0f}-{hi:.0f}':>13}"
            f" {e['decode_ratio_median']:>5.2f}x {f'{rlo:.2f}-{rhi:.2f}':>12}"
            f" {e['ttft_ms_median']:>8.1f} {e['ttft_ratio_median']:>5.2f}x"
        )
    print(
        "\nratio: bendi / llama-cpp-python, median of per-round ratios (decode: higher is better;"
        " TTFT: lower is better).\n"
        "Row 1 vs 3 is default vs default: bendi leaves flash attention to llama.cpp (auto, on for"
        " CPU), llama-cpp-python's Llama() defaults to flash_attn=False.\n"
        "Row 2 vs 3 runs the same attention kernel on both, so it isolates the engine loop.\n"
        "decode tok/s = (tokens - 1) / (last content chunk - first content chunk); TTFT = request"
        " start to first content chunk.\n"
        "llama-cpp-python is reset() before each request so it prefills the whole prompt, as bendi"
        " does (prompt_cache=False)."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="2 rounds, 2 prompts, 64 tokens")
    ap.add_argument("--rounds", type=int, help="alternating rounds (default 5, quick 2)")
    ap.add_argument("--max-tokens", type=int, help="tokens per request (default 128, quick 64)")
    ap.add_argument("--ctx", type=int, default=1024, help="context size for every engine")
    ap.add_argument("--threads", type=int, help="llama.cpp threads (default: bendi's default)")
    ap.add_argument("--out", type=Path, default=RESULTS / "engine.json")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        worker(args.worker, json.loads(args.config))
        return

    from bendi.runtime.llama import default_threads
    from bendi.store import bundled_model_path

    rounds = args.rounds or (2 if args.quick else 5)
    cfg = {
        "model": str(bundled_model_path()),
        "ctx": args.ctx,
        "threads": args.threads or default_threads(),
        "max_tokens": args.max_tokens or (64 if args.quick else 128),
        "prompts": [PROMPTS[0], PROMPTS[3]] if args.quick else PROMPTS,
    }
    names = list(ENGINES)
    results: list[dict[str, list[dict[str, Any]]]] = []
    started = time.time()
    for r in range(rounds):
        # Rotate the order so no engine always runs first (or always right after another).
        order = names[r % len(names):] + names[: r % len(names)]
        rnd: dict[str, list[dict[str, Any]]] = {}
        for name in order:
            rnd[name] = run_worker(name, cfg)
            print(f"round {r + 1}/{rounds} {name:<17} decode {med([x['decode_tps'] for x in rnd[name]]):6.1f} tok/s"
                  f"  TTFT {1000 * med([x['ttft'] for x in rnd[name]]):6.1f} ms", flush=True)
        results.append(rnd)

    engines = summarise(results)
    print_table(engines, cfg, rounds)
    write_results(args.out, "engine", started, config=cfg | {"rounds": rounds}, engines=engines,
                  raw=results)


if __name__ == "__main__":
    main()
