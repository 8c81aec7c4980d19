"""GGUF -> Hugging Face layout (config, tokenizer, chat template, safetensors), by transformers.

Run as a script by the interpreter of the vLLM environment (which has transformers, torch and
gguf), never imported by bendi itself: `python -I gguf_to_hf.py MODEL.gguf OUT_DIR [--dtype
bfloat16]` (-I: this directory's gguf.py must not shadow the gguf package).
transformers reads the GGUF metadata into a config and a tokenizer, dequantizes the tensors and
undoes llama.cpp's reordering of the attention weights; the result is what vLLM loads. It prints
one JSON line with what it wrote, or an error line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("gguf", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = time.monotonic()
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        print(f"error: this Python lacks {exc.name}; install the converter's packages "
              "(transformers, torch, gguf, accelerate) in the vLLM environment", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        # transformers wants a directory and a file name ending in .gguf; blobs have neither
        link = Path(tmp) / "model.gguf"
        link.symlink_to(args.gguf.resolve())
        kwargs: dict[str, object] = {"gguf_file": link.name}
        try:
            from transformers import GgufConfig  # transformers 5: dequantize explicitly

            kwargs["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:
            pass  # transformers 4 always dequantizes
        try:
            tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=link.name)
            model = AutoModelForCausalLM.from_pretrained(tmp, dtype=getattr(torch, args.dtype), **kwargs)
        except (ValueError, KeyError, NotImplementedError) as exc:
            print(f"error: transformers {transformers.__version__} cannot convert this GGUF file: {exc}",
                  file=sys.stderr)
            return 2
        config = model.config
        if getattr(config, "quantization_config", None) is not None:
            del config.quantization_config  # the weights written are plain tensors
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out, safe_serialization=True)
        tokenizer.save_pretrained(args.out)
    written = sorted(p.name for p in args.out.iterdir())
    print(json.dumps({"files": written, "architectures": list(config.architectures or []),
                      "transformers": transformers.__version__, "dtype": args.dtype,
                      "seconds": round(time.monotonic() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
