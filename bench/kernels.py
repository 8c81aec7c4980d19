"""What batching can gain at most: llama_decode alone, by weight type, with no server around it.

For the bundled SmolLM2-135M (Q4_1) and copies of it re-quantized with llama.cpp's quantizer
(the same code path as `bendi create --quantize`), times in one llama.cpp context with 8
sequence slots:

    step1   one decode step of 1 sequence (median over the steps)
    step8   one decode step of 8 sequences
    gain    8 * step1 / step8: the most that continuous batching can give at 8 streams, since
            a server does at least this work per token
    pp      one prompt step of 8 x 35 tokens

Rounds alternate the types; figures are medians over rounds, gains are per-round ratios.

    .venv/bin/python bench/kernels.py                # about 1 minute
    .venv/bin/python bench/kernels.py --types q8_0   # Q4_1 and Q8_0 only
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import llama_cpp

from bendi.runtime.llama.backend import default_threads, init_backend
from bendi.runtime.quantize import check_target, quantize_file
from bendi.store import bundled_model_path
from bendi.store.gguf import read_gguf
from results_file import write_results

RESULTS = Path(__file__).resolve().parent / "results"
SLOTS = 8
PROMPT = 35  # tokens per sequence in the prompt step, about a chat prompt of the serve benchmark


def measure(path: str, threads: int, steps: int) -> dict[str, float]:
    mparams = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(path.encode(), mparams)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = 512 * SLOTS
    cparams.n_batch = cparams.n_ubatch = 512
    cparams.n_seq_max = SLOTS
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.kv_unified = False  # as bendi's engine: one KV stream per slot
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    mem = llama_cpp.llama_get_memory(ctx)
    batch = llama_cpp.llama_batch_init(512, 0, 1)

    def step(seqs: range, pos: int, n_tok: int = 1) -> float:
        n = 0
        for s in seqs:
            for k in range(n_tok):
                batch.token[n] = 100 + 7 * s + k
                batch.pos[n] = pos + k
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = s
                batch.logits[n] = k == n_tok - 1
                n += 1
        batch.n_tokens = n
        t = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        return time.perf_counter() - t

    try:
        out: dict[str, float] = {}
        for k in (1, SLOTS):
            llama_cpp.llama_memory_clear(mem, True)
            step(range(SLOTS), 0, PROMPT)
            times = [step(range(k), PROMPT + i) for i in range(steps)]
            out[f"step{k}_ms"] = 1000 * statistics.median(times[3:])
        llama_cpp.llama_memory_clear(mem, True)
        out["pp_ms"] = 1000 * step(range(SLOTS), 0, PROMPT)
        return out
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--types", default="q8_0,q4_0", help="re-quantized copies to compare with Q4_1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=64, help="decode steps per measurement")
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--out", type=Path, default=RESULTS / "kernels.json")
    args = ap.parse_args()

    init_backend()
    source_path = bundled_model_path()
    if source_path is None:
        raise SystemExit("the bundled model is not installed (run `make test` or `make run` once)")
    source = read_gguf(source_path)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bendi-kernels-") as tmp:
        models = {"Q4_1 (bundled)": str(source_path)}
        for name in [t for t in args.types.split(",") if t]:
            # Q4_0 from Q4_1 rounds twice: fine for timing, not something to serve.
            target = check_target(name, source, allow_requantize=True)
            path = Path(tmp) / f"{target}.gguf"
            quantize_file(source, path, target)
            models[f"{target.upper()} (from Q4_1)"] = str(path)
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in models}
        for r in range(args.rounds):
            order = list(models)[r % len(models):] + list(models)[: r % len(models)]
            for label in order:
                runs[label].append(measure(models[label], args.threads, args.steps))
                print(f"round {r + 1}/{args.rounds} {label}: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in runs[label][-1].items()), flush=True)
        sizes = {m: os.path.getsize(p) for m, p in models.items()}

    table: dict[str, dict[str, Any]] = {}
    for label, rs in runs.items():
        gains = [SLOTS * r["step1_ms"] / r["step8_ms"] for r in rs]
        table[label] = {
            "size_mb": sizes[label] / 1e6,
            **{k: statistics.median(r[k] for r in rs) for k in ("step1_ms", "step8_ms", "pp_ms")},
            "gain": statistics.median(gains),
            "gain_range": [min(gains), max(gains)],
        }
    print(f"\nllama_decode alone, SmolLM2-135M, {args.threads} threads, {SLOTS} slots, "
          f"medians of {args.rounds} rounds ({args.steps} steps each)\n")
    head = f"{'weights':<20} {'size':>8} {'step1':>8} {'step8':>8} {'gain 8x':>8} {'(range)':>11} {'prompt 8x35':>12}"
    print(head)
    print("-" * len(head))
    for label, e in table.items():
        lo, hi = e["gain_range"]
        print(f"{label:<20} {e['size_mb']:>6.0f}MB {e['step1_ms']:>6.1f}ms {e['step8_ms']:>6.1f}ms "
              f"{e['gain']:>7.2f}x {f'{lo:.2f}-{hi:.2f}':>11} {e['pp_ms']:>10.0f}ms")
    print("\ngain = 8 x step1 / step8: tokens/s of 8 sequences decoded together over 1 sequence at "
          "a time,\nthe ceiling for what continuous batching can give a server on these weights.")
    write_results(args.out, "kernels", started, threads=args.threads, table=table, raw=runs)


if __name__ == "__main__":
    main()
