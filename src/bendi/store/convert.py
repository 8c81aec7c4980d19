"""`bendi create NAME --from GGUF_MODEL --format safetensors`: a GGUF model converted to the
Hugging Face layout that vLLM loads, and registered in the store like `bendi import DIR`.

The conversion itself (store/gguf_to_hf.py) runs in the vLLM environment, which has transformers
and torch; bendi's own environment needs neither.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from bendi.errors import InvalidModelFile, InvalidRequest
from bendi.store.records import ModelRecord
from bendi.store.store import ModelStore

SCRIPT = Path(__file__).with_name("gguf_to_hf.py")


def to_huggingface(store: ModelStore, source: str, name: str, python: str, *,
                   timeout: float = 3600.0, **fields: Any) -> ModelRecord:
    """Convert GGUF model `source` with the interpreter `python` and register it as `name`
    (format safetensors); parameters and system prompt are inherited unless given."""
    record = store.get(source)
    if record.format != "gguf":
        raise InvalidRequest(f"{source} is already a {record.format} model")
    work = store.root / f".partial-convert-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    out = work / "model"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    try:
        work.mkdir(parents=True)
        try:
            # -I: the script's directory (bendi's store package, with its own gguf.py) must not
            # shadow the gguf package transformers imports
            done = subprocess.run([python, "-I", str(SCRIPT), str(record.path), str(out)], env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise InvalidModelFile(f"converting {source} took longer than {timeout:.0f}s") from None
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
            why = next((ln.removeprefix("error: ") for ln in reversed(lines) if ln.startswith("error:")),
                       lines[-1] if lines else f"exit code {done.returncode}")
            raise InvalidModelFile(f"cannot convert {source} to safetensors: {why}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        fields = {k: v for k, v in fields.items() if v is not None}
        parameters = fields.pop("parameters", record.parameters)
        system = fields.pop("system", record.manifest.get("system"))
        return store.import_dir(
            out, name, parameters=parameters, system=system,
            note=f"{record.name} (converted from {record.details.get('quantization_level')} "
                 f"GGUF by transformers {report.get('transformers')})", **fields)
    finally:
        shutil.rmtree(work, ignore_errors=True)
