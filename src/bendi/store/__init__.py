"""Model store: manifests, content-addressed blobs, import."""

from bendi.store.names import ModelName, parse_name
from bendi.store.store import ModelRecord, ModelStore, bundled_model_path

__all__ = ["ModelName", "ModelRecord", "ModelStore", "bundled_model_path", "parse_name"]
