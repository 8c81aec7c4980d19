"""The model store: content-addressed GGUF blobs and one JSON manifest per name:tag.

Layout under BENDI_HOME/models::

    blobs/sha256-<hex>              the model file (a hard link, a copy, or a symlink for bundled files)
    manifests/<name>/<tag>.json     what the name points at, plus metadata and default parameters
    trees/sha256-<hex>/             a Hugging Face layout model: links to its files' blobs (store/hf.py)

Every write goes to a temporary file first and is renamed into place, so an interrupted import
never leaves a manifest pointing at a partial blob. Blobs are deleted when no manifest uses them.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bendi.errors import Conflict, InvalidModelFile, ModelNotFound
from bendi.store.blobs import (
    dir_lock,
    place_blob,
    read_json,
    sha256_file,
    sweep_blobs,
    sweep_trees,
    write_json_atomic,
)
from bendi.store.bundled import BUNDLED_NAME, bundled_model_path, register_bundled
from bendi.store.gguf import GGUFInfo, read_gguf
from bendi.store.names import ModelName, parse_name
from bendi.store.records import ModelRecord, describe_gguf


class ModelStore:
    """Content-addressed model files and their manifests under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.trees = self.root / "trees"

    # -- reading -----------------------------------------------------------------------------

    def list(self) -> list[ModelRecord]:
        """All models, newest first. Reads only: nothing is registered or repaired here."""
        records = []
        if self.manifests.is_dir():
            for path in self.manifests.rglob("*.json"):
                rel = path.relative_to(self.manifests)
                name = ModelName("/".join(rel.parts[:-1]), path.stem)
                manifest = read_json(path)
                if manifest is not None:
                    records.append(ModelRecord(name, manifest, self._blob_path(manifest)))
        return sorted(records, key=lambda r: r.modified, reverse=True)

    def get(self, name: str) -> ModelRecord:
        """The model called `name`; ModelNotFound (with close names) if there is none."""
        parsed = parse_name(name)
        manifest = read_json(self._manifest_path(parsed))
        if manifest is None:
            raise ModelNotFound(self._not_found_message(name), param="model")
        record = ModelRecord(parsed, manifest, self._blob_path(manifest))
        if not record.path.exists():
            raise InvalidModelFile(f"model {parsed} is missing its file {record.path}; import it again")
        return record

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except ModelNotFound:
            return False
        return True

    def _not_found_message(self, name: str) -> str:
        known = [str(r.name) for r in self.list()]
        wanted = name.lower()
        same_name = [k for k in known if k.split(":")[0] == wanted.split(":")[0]]
        close = same_name + difflib.get_close_matches(wanted, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
        return f"model {name!r} not found.{hint} Run `bendi list` to see installed models."

    # -- writing -----------------------------------------------------------------------------

    def import_file(
        self,
        source: str | Path,
        name: str,
        *,
        parameters: dict[str, Any] | None = None,
        system: str | None = None,
        template: str | None = None,
        link: str = "auto",
    ) -> ModelRecord:
        """Verify a GGUF file and register it as `name`.

        link: "auto" hard-links when on the same filesystem and copies otherwise; "copy" always
        copies; "symlink" points at the file where it lies (used for the bundled model).
        """
        parsed = parse_name(name)
        source = Path(source).expanduser()
        if not source.is_file():
            raise InvalidModelFile(f"{source}: no such file")
        info = read_gguf(source)  # raises before anything is written
        digest = sha256_file(source)
        with self._lock():
            blob = self.blobs / f"sha256-{digest}"
            if not blob.exists():
                self._place_blob(source, blob, link)
            manifest = {
                "schema": 1,
                "model": {"digest": f"sha256:{digest}", "size": source.stat().st_size},
                "details": describe_gguf(info),
                "parameters": parameters or {},
                "system": system,
                "template": template,
                "source": str(source),
                "created_at": time.time(),
                "modified_at": time.time(),
            }
            write_json_atomic(self._manifest_path(parsed), manifest)
        return ModelRecord(parsed, manifest, blob)

    def import_dir(
        self,
        source: str | Path,
        name: str,
        *,
        parameters: dict[str, Any] | None = None,
        system: str | None = None,
        link: str = "auto",
        note: str | None = None,
        **fields: Any,
    ) -> ModelRecord:
        """Verify a Hugging Face layout directory (config, tokenizer, safetensors) and register it
        as `name`; its files become blobs and the record's path is the tree of links to them."""
        from bendi.store import hf

        parsed = parse_name(name)
        source = Path(source).expanduser()
        files = hf.model_files(source)  # raises before anything is written
        digests = {path.name: f"sha256:{sha256_file(path)}" for path in files}
        tree_digest = hf.tree_digest(digests)
        with self._lock():
            for path in files:
                blob = self.blobs / digests[path.name].replace(":", "-")
                if not blob.exists():
                    self._place_blob(path, blob, link)
            tree = self.trees / tree_digest.replace(":", "-")
            hf.materialize(tree, self.blobs, digests)
            manifest = {
                "schema": 1,
                "model": {"digest": tree_digest, "size": sum(p.stat().st_size for p in files)},
                "files": digests,
                "details": hf.describe_hf(tree),
                "parameters": parameters or {},
                "system": system,
                "template": None,
                "source": note or str(source),
                "created_at": time.time(),
                "modified_at": time.time(),
            }
            manifest.update({k: v for k, v in fields.items() if v is not None})
            write_json_atomic(self._manifest_path(parsed), manifest)
            self._collect_garbage()
        return ModelRecord(parsed, manifest, tree)

    def create_from(
        self,
        source: str,
        name: str,
        produce: Callable[[GGUFInfo, Path], None],
        *,
        note: str,
        **fields: Any,
    ) -> ModelRecord:
        """Register a model derived from `source` (a re-quantized copy, say) as `name`.

        `produce(source_info, path)` writes the new GGUF at `path`, a temporary file in the blob
        directory; it is verified and moved into place only when complete, so a failure or a
        kill leaves no blob and no manifest behind. Parameters, system prompt and template are
        inherited from `source` unless given in `fields`.
        """
        record = self.get(source)
        parsed = parse_name(name)
        self.blobs.mkdir(parents=True, exist_ok=True)
        tmp = self.blobs / f".partial-{os.getpid()}-{uuid.uuid4().hex}.gguf"
        try:
            produce(record.gguf(), tmp)
            info = read_gguf(tmp)
            digest = sha256_file(tmp)
            with self._lock():
                blob = self.blobs / f"sha256-{digest}"
                if not blob.exists():
                    os.replace(tmp, blob)
                manifest = {
                    "schema": 1,
                    "model": {"digest": f"sha256:{digest}", "size": blob.stat().st_size},
                    "details": describe_gguf(info),
                    "parameters": record.parameters,
                    "system": record.manifest.get("system"),
                    "template": record.manifest.get("template"),
                    "source": f"{record.name} ({note})",
                    "created_at": time.time(),
                    "modified_at": time.time(),
                }
                manifest.update({k: v for k, v in fields.items() if v is not None})
                write_json_atomic(self._manifest_path(parsed), manifest)
                self._collect_garbage()  # the blob `name` pointed at before, if nothing else uses it
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return ModelRecord(parsed, manifest, blob)

    def blob_path(self, digest: str) -> Path | None:
        """The stored file with this digest, if there is one."""
        blob = self.blobs / digest.replace(":", "-")
        return blob if blob.exists() else None

    def install_blob(self, path: Path, digest: str, name: str, *, source: str, move: bool,
                     **fields: Any) -> ModelRecord:
        """Register a GGUF whose sha256 the caller verified (a pull, a bundle) as `name`.

        `move` renames `path` into the blob directory (same filesystem); otherwise it is copied or
        hard-linked. The manifest is written last, so until then nothing names the blob.
        """
        parsed = parse_name(name)
        info = read_gguf(path)
        with self._lock():
            blob = self.blobs / digest.replace(":", "-")
            if not blob.exists():
                if move:
                    self.blobs.mkdir(parents=True, exist_ok=True)
                    os.replace(path, blob)
                else:
                    self._place_blob(path, blob, "auto")
            now = time.time()
            manifest = {
                "schema": 1,
                "model": {"digest": digest, "size": blob.stat().st_size},
                "details": describe_gguf(info),
                "parameters": fields.pop("parameters", None) or {},
                "system": fields.pop("system", None),
                "template": fields.pop("template", None),
                "source": source,
                "created_at": now,
                "modified_at": now,
                **{k: v for k, v in fields.items() if v is not None},
            }
            write_json_atomic(self._manifest_path(parsed), manifest)
            self._collect_garbage()  # the blob `name` pointed at before, if nothing else uses it
        return ModelRecord(parsed, manifest, blob)

    def copy(self, source: str, dest: str) -> ModelRecord:
        """Give an existing model a second name; the blob is shared, not copied."""
        record = self.get(source)
        parsed = parse_name(dest)
        manifest = dict(record.manifest, modified_at=time.time())
        with self._lock():
            write_json_atomic(self._manifest_path(parsed), manifest)
        return ModelRecord(parsed, manifest, record.path)

    def update(self, name: str, **fields: Any) -> ModelRecord:
        """Change manifest fields (parameters, system, template) of an existing model."""
        record = self.get(name)
        manifest = dict(record.manifest, modified_at=time.time())
        manifest.update(fields)
        with self._lock():
            write_json_atomic(self._manifest_path(record.name), manifest)
        return ModelRecord(record.name, manifest, record.path)

    def remove(self, name: str) -> ModelRecord:
        """Delete a name; its blob goes when no other name uses it."""
        record = self.get(name)
        with self._lock():
            path = self._manifest_path(record.name)
            path.unlink()
            with contextlib.suppress(OSError):  # prune empty directories left behind
                path.parent.relative_to(self.manifests)
                if path.parent != self.manifests and not any(path.parent.iterdir()):
                    path.parent.rmdir()
            self._collect_garbage()
        return record

    def ensure_bundled(self) -> None:
        """Register the bundled SmolLM2 GGUF as smollm2:135m unless the user removed it (called once
        when the services are built, never by a read)."""
        register_bundled(self)

    # -- internals ---------------------------------------------------------------------------

    def _manifest_path(self, name: ModelName) -> Path:
        return self.manifests.joinpath(*name.name.split("/"), f"{name.tag}.json")

    def _blob_path(self, manifest: dict[str, Any]) -> Path:
        digest = str(manifest["model"]["digest"]).replace(":", "-")
        return (self.trees if "files" in manifest else self.blobs) / digest

    def _place_blob(self, source: Path, blob: Path, link: str) -> None:
        place_blob(source, blob, link)

    def _collect_garbage(self) -> None:
        used = set()
        if self.manifests.is_dir():
            for path in self.manifests.rglob("*.json"):
                manifest = read_json(path)
                if manifest is not None:
                    used.add(self._blob_path(manifest).name)
                    used.update(str(d).replace(":", "-") for d in manifest.get("files", {}).values())
        sweep_blobs(self.blobs, used)
        sweep_trees(self.trees, used)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with dir_lock(self.root):
            yield


__all__ = ["BUNDLED_NAME", "Conflict", "ModelRecord", "ModelStore", "bundled_model_path", "describe_gguf"]
