"""The model store: names (names.py), records and the facts a GGUF header gives (records.py,
gguf.py), content-addressed blobs and atomic writes (blobs.py), the bundled model (bundled.py),
and the store itself (store.py: import, create, copy, remove; reads never write)."""

from bendi.store.names import ModelName, parse_name
from bendi.store.store import ModelRecord, ModelStore, bundled_model_path

__all__ = ["ModelName", "ModelRecord", "ModelStore", "bundled_model_path", "parse_name"]
