"""GPU check (prepared, not yet run: no GPU machine was available when it was written): the same
model through `bendi serve` on one GPU, served by vLLM and by the llama.cpp CUDA engine, at
concurrency 1, 8 and 32, one server at a time.

Needs a machine with one NVIDIA GPU, bendi installed with a CUDA build of llama-cpp-python
(`bendi doctor` shows `gpu_offload: True`) and vLLM (CUDA) in BENDI_VLLM_PYTHON's environment
(or in bendi's own: `pip install 'bendi[vllm]'`). The model: a GGUF file and the same model as a
Hugging Face directory; by default the bundled SmolLM2-135M and its conversion
(`bendi create --format safetensors`), which is tiny and so measures mostly overheads; pass a
real one for a meaningful comparison:

    python bench/vllm_gpu.py                                   # bundled model, ~10 minutes
    python bench/vllm_gpu.py --gguf R1-1.5B-Q8_0.gguf --hf ./DeepSeek-R1-Distill-Qwen-1.5B

Prints tokens/s and TTFT p50 per engine and concurrency, and vllm/llama.cpp ratios; writes
bench/results/vllm_gpu.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.server_util import ServerProcess  # noqa: E402

import vllm_routing  # noqa: E402
from results_file import write_results  # noqa: E402

LEVELS = ((1, 4), (8, 16), (32, 64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, help="GGUF file (default: the bundled model)")
    parser.add_argument("--hf", type=Path, help="the same model as a Hugging Face directory "
                        "(default: converted from the GGUF)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--ctx", type=int, default=4096)
    args = parser.parse_args()
    started_all = time.time()
    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"bendi-bench-gpu-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENDI_") or k == "BENDI_VLLM_PYTHON"}
    env["BENDI_HOME"] = str(home)

    def bendi(*argv: str) -> None:
        subprocess.run([sys.executable, "-m", "bendi", *argv], env=env, check=True)

    if args.gguf:
        bendi("import", str(args.gguf), "--name", "bench:gguf")
    else:
        bendi("cp", "smollm2:135m", "bench:gguf")
    if args.hf:
        bendi("import", str(args.hf), "--name", "bench:hf")
    else:
        bendi("create", "bench:hf", "--from", "bench:gguf", "--format", "safetensors")

    results: dict[str, Any] = {}
    for engine, model, extra in (("llama.cpp", "bench:gguf", {"BENDI_GPU_LAYERS": "999"}),
                                 ("vllm", "bench:hf", {"BENDI_VLLM_DEVICES": "0"})):
        server = ServerProcess(home, "--preload", model, env={
            **{k: v for k, v in env.items() if k.startswith("BENDI_VLLM_PYTHON")},
            "BENDI_CTX": str(args.ctx), "BENDI_SLOTS": "32", **extra})
        server.wait_ready(timeout=1800)
        vllm_routing.MODEL = model
        try:
            asyncio.run(vllm_routing.level(server.url, 4, 16, 8))  # warm-up
            for conc, n in LEVELS:
                out = asyncio.run(vllm_routing.level(server.url, conc, args.tokens, n))
                results.setdefault(engine, {})[f"c{conc}"] = out
                print(f"{engine:9s} c{conc:<3d} {out['tokens_per_s']:8.1f} tok/s  "
                      f"ttft p50 {out['ttft_p50'] * 1000:7.0f} ms", flush=True)
        finally:
            server.stop(timeout=120)
    print(f"\n{'concurrency':>11} {'llama.cpp tok/s':>16} {'vLLM tok/s':>11} {'vLLM / llama.cpp':>17}")
    for conc, _ in LEVELS:
        a = results["llama.cpp"][f"c{conc}"]["tokens_per_s"]
        b = results["vllm"][f"c{conc}"]["tokens_per_s"]
        print(f"{conc:>11} {a:>16.1f} {b:>11.1f} {b / a:>17.2f}")
    write_results(ROOT / "bench" / "results" / "vllm_gpu.json", "vllm_gpu", started_all,
                  results=results, tokens=args.tokens, ctx=args.ctx,
                  model=str(args.gguf or "smollm2:135m"))


if __name__ == "__main__":
    main()
