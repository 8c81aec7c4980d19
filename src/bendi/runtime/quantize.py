"""Re-quantize a GGUF model with llama.cpp's own quantizer (`llama_model_quantize`).

Why a user would: the weight type decides which CPU kernels llama.cpp can use, and that matters
most when several sequences are decoded together. Measured on a 2-core x86 machine with the
bundled SmolLM2-135M (bench notes in docs/api.md): Q4_1 has no batched kernel there, so a step
of 8 sequences costs about 5x one of 1 sequence; the same weights converted to Q8_0 take the
llamafile tinyBLAS path and cost about 3.6x, and prompts are processed about 1.8x faster. Q8_0
is larger and a little slower for a single stream, so it is a choice for servers, not a default.

Going down in precision from an already quantized file (Q4_1 to Q4_0, say) compounds two
rounding errors; that is refused unless asked for, as Ollama refuses it outright. Going up
(to Q8_0 or F16) keeps the weights as they are, up to rounding far finer than the source's.
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import llama_cpp

from bendi.errors import EngineError, InsufficientMemory, InvalidRequest
from bendi.store.gguf import FILE_TYPES, GGUFInfo

#: target name -> approximate bits per weight (for the disk check)
TARGETS: dict[str, float] = {
    "f16": 16.0, "bf16": 16.0, "q8_0": 8.5, "q6_k": 6.56, "q5_k_m": 5.7, "q5_k_s": 5.5,
    "q5_1": 6.0, "q5_0": 5.5, "q4_k_m": 4.85, "q4_k_s": 4.6, "q4_1": 5.0, "q4_0": 4.5,
    "iq4_nl": 4.5, "iq4_xs": 4.25, "q3_k_m": 3.9, "q3_k_s": 3.5, "q2_k": 3.35,
}
#: source types that lose nothing further when quantized (full or half precision)
_FULL_PRECISION = {"F32", "F16", "BF16"}
#: targets fine enough that re-quantizing a quantized file adds no meaningful error
_NEAR_LOSSLESS = {"q8_0", "f16", "bf16"}
_FTYPE_IDS = {name.lower(): ftype for ftype, name in FILE_TYPES.items()}


def check_target(target: str, source: GGUFInfo, *, allow_requantize: bool = False) -> str:
    """Normalise `target` and refuse conversions that would quietly lose quality."""
    wanted = target.strip().lower()
    if wanted not in TARGETS:
        raise InvalidRequest(
            f"unknown quantization {target!r}; choose one of: {', '.join(TARGETS)}", param="quantize"
        )
    current = source.quantization
    if current.lower() == wanted:
        raise InvalidRequest(f"the model is already {current}", param="quantize")
    if current not in _FULL_PRECISION and wanted not in _NEAR_LOSSLESS and not allow_requantize:
        raise InvalidRequest(
            f"the model is already quantized ({current}); quantizing it again to {wanted.upper()} "
            "adds a second rounding error. Quantize from an F16/BF16 GGUF instead, choose q8_0 "
            "(no further loss), or pass --allow-requantize.",
            param="quantize",
        )
    return wanted


def estimated_size(source: GGUFInfo, target: str) -> int:
    return int(source.parameter_count * TARGETS[target] / 8) + (source.data_offset or 0)


def quantize_file(source: GGUFInfo, dest: Path, target: str, *, threads: int = 0) -> None:
    """Write `source` quantized to `target` at `dest` (which the caller cleans up on failure)."""
    from bendi.runtime.llama.backend import init_backend  # silences llama.cpp's per-tensor log

    need = estimated_size(source, target)
    free = shutil.disk_usage(dest.parent).free
    if need > free:
        raise InsufficientMemory(
            f"quantizing to {target.upper()} needs about {need / 2**30:.1f} GiB of disk at "
            f"{dest.parent}; {free / 2**30:.1f} GiB is free"
        )
    init_backend()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FTYPE_IDS[target]
    params.allow_requantize = source.quantization not in _FULL_PRECISION
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(
        str(source.path).encode(), str(dest).encode(), ctypes.byref(params)
    )
    if rc != 0 or not dest.is_file():
        raise EngineError(f"llama.cpp could not quantize {source.path} to {target.upper()} (code {rc})")
