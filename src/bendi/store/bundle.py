"""Bundles: models and knowledge bases carried to a machine with no network, in one tar file.

Layout (an uncompressed POSIX tar; GGUF weights do not compress)::

    bendi-bundle/BUNDLE                  marker, always first: `bendi-bundle 1`
    bendi-bundle/blobs/sha256-<hex>      model files
    bendi-bundle/manifests/<name>/<tag>.json
    bendi-bundle/kb/<name>/...           each knowledge base's directory (SQLite files copied
                                         with SQLite's backup API, so a live database is consistent)
    bendi-bundle/index.json              what is inside: models with provenance, knowledge bases
                                         with their registry settings, and the sha256 and size of
                                         every file above
    bendi-bundle/SHA256SUMS              the same digests for `sha256sum -c` after `tar x`
    bendi-bundle/signature.json          optional: ed25519 signature of index.json's bytes

Export streams each file into the tar while hashing it; import streams each member into a
staging directory while hashing it, then checks every digest (and the signature) before anything
is installed, and installs with rollback, so a bad or tampered bundle installs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from bendi import __version__
from bendi.config import Settings
from bendi.errors import (
    BadSignature,
    Conflict,
    InvalidBundle,
    InvalidModelFile,
    InvalidRequest,
    ModelNotFound,
)
from bendi.kb.embed import BUNDLED_ALIASES, BUNDLED_EMBED
from bendi.store.gguf import read_gguf
from bendi.store.records import ModelRecord
from bendi.store.signing import (
    fingerprint,
    load_private_key,
    load_public_keys,
    sign,
    verify,
)
from bendi.store.store import ModelStore
from bendi.store.transfer import check_disk_space

ROOT = "bendi-bundle"
MARKER, INDEX, SUMS, SIGNATURE = "BUNDLE", "index.json", "SHA256SUMS", "signature.json"
FORMAT_VERSION = 1
_CHUNK = 4 * 1024 * 1024
_SQLITE_MAGIC = b"SQLite format 3\x00"
#: files SQLite keeps next to a live database; the backup already holds their contents
_SQLITE_SIDE = ("-wal", "-shm", "-journal")

#: (what, bytes done, bytes total) while files go in or out
BundleProgress = Callable[[str, int, int], None]


@dataclass
class BundleSummary:
    path: Path
    models: list[str] = field(default_factory=list)
    knowledge_bases: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    size: int = 0
    signer: str | None = None
    notes: list[str] = field(default_factory=list)


def is_bundle(path: Path) -> bool:
    """True when `path` is a bendi bundle (its first tar member is the marker)."""
    try:
        with path.open("rb") as fh:
            block = fh.read(512)
    except OSError:
        return False
    return len(block) == 512 and block[257:262] == b"ustar" and \
        block[:100].rstrip(b"\0") == f"{ROOT}/{MARKER}".encode()


class _Hashing:
    """A read-only file wrapper that hashes what passes through it."""

    def __init__(self, fh: IO[bytes], progress: Callable[[int], None] | None = None) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.n = 0
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.sha.update(data)
        self.n += len(data)
        if self.progress is not None:
            self.progress(self.n)
        return data


# -- export ---------------------------------------------------------------------------------------

class _Writer:
    def __init__(self, tar: tarfile.TarFile, progress: BundleProgress | None) -> None:
        self.tar = tar
        self.files: dict[str, dict[str, Any]] = {}
        self.progress = progress

    def add_bytes(self, rel: str, data: bytes) -> None:
        info = tarfile.TarInfo(f"{ROOT}/{rel}")
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        self.tar.addfile(info, io.BytesIO(data))
        self.files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    def add_file(self, rel: str, path: Path, label: str) -> str:
        size = path.stat().st_size
        info = tarfile.TarInfo(f"{ROOT}/{rel}")
        info.size, info.mtime, info.mode = size, int(path.stat().st_mtime), 0o644
        progress = self.progress
        report = (lambda n: progress(label, n, size)) if progress is not None else None
        with path.open("rb") as fh:
            hashing = _Hashing(fh, report)
            self.tar.addfile(info, hashing)  # type: ignore[arg-type]
        if hashing.n != size:
            raise InvalidBundle(f"{path} changed size while it was being exported")
        digest = hashing.sha.hexdigest()
        self.files[rel] = {"sha256": digest, "size": size}
        return digest


def _provenance(record: ModelRecord) -> dict[str, Any]:
    found = dict(record.manifest.get("provenance") or {})
    found.setdefault("source", record.manifest.get("source"))
    found.setdefault("license", record.details.get("license"))
    found.setdefault("sha256", record.digest.removeprefix("sha256:"))
    found.setdefault("added_at", time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                               time.gmtime(record.manifest.get("created_at", 0))))
    return found


def _snapshot_kb(directory: Path, scratch: Path) -> list[tuple[str, Path]]:
    """(relative path, file to read) for a knowledge base directory, SQLite files by backup."""
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel.endswith(_SQLITE_SIDE):
            continue
        with path.open("rb") as fh:
            is_sqlite = fh.read(16) == _SQLITE_MAGIC
        if is_sqlite:
            copy = scratch / f"{uuid.uuid4().hex}.sqlite"
            src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            dst = sqlite3.connect(copy)
            try:
                src.backup(dst)  # a consistent snapshot even while the database is written
            finally:
                dst.close()
                src.close()
            out.append((rel, copy))
        else:
            out.append((rel, path))
    return out


def export_bundle(settings: Settings, store: ModelStore, kb: Any, models: list[str],
                  knowledge_bases: list[str], out: Path, *, sign_key: Path | None = None,
                  progress: BundleProgress | None = None) -> BundleSummary:
    """Write models and knowledge bases to one bundle at `out` (atomically: out.partial first)."""
    if not models and not knowledge_bases:
        raise InvalidRequest("name at least one model or --kb knowledge base to export")
    key = load_private_key(sign_key) if sign_key else None  # fail before writing anything
    records = {str(r.name): r for r in (store.get(m) for m in models)}
    for record in records.values():
        if record.format != "gguf":  # a bundle carries one blob per model
            raise InvalidRequest(f"{record.name} is a {record.format} model directory; bundles carry "
                                 "GGUF models: copy its directory and `bendi import DIR` it there")
    kb_infos = [kb.info(name) for name in knowledge_bases]
    summary = BundleSummary(out)
    for info in kb_infos:
        embed = info["embed"]
        if embed not in BUNDLED_ALIASES and embed != BUNDLED_EMBED and embed not in records:
            record = store.get(embed)
            records[str(record.name)] = record
            summary.notes.append(f"included {record.name}: knowledge base {info['name']} embeds with it")
    needed = sum(r.size for r in records.values())
    check_disk_space(out.parent if out.parent != Path("") else Path("."), needed)
    partial = out.with_name(out.name + ".partial")
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=settings.home)) if kb_infos else None
    try:
        # copybufsize: tarfile copies in 16 KB pieces by default, slow for multi-GB blobs
        with partial.open("wb") as raw, tarfile.TarFile(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT,
                                                        copybufsize=_CHUNK) as tar:
            w = _Writer(tar, progress)
            w.add_bytes(MARKER, f"bendi-bundle {FORMAT_VERSION}\n".encode())
            index: dict[str, Any] = {
                "format": "bendi-bundle", "version": FORMAT_VERSION, "bendi": __version__,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "models": [], "knowledge_bases": [],
            }
            for name, record in records.items():
                blob = f"blobs/{record.digest.replace(':', '-')}"
                if blob not in w.files:
                    digest = w.add_file(blob, record.path, name)
                    if f"sha256:{digest}" != record.digest:
                        raise InvalidBundle(f"the store's file for {name} does not match its digest "
                                          f"(damaged on disk?); pull or import it again")
                manifest_rel = f"manifests/{record.name.name}/{record.name.tag}.json"
                w.add_bytes(manifest_rel, json.dumps(record.manifest, indent=2, ensure_ascii=False).encode())
                index["models"].append({"name": name, "digest": record.digest, "size": record.size,
                                        "blob": blob, "manifest": manifest_rel,
                                        "provenance": _provenance(record)})
                summary.models.append(name)
            for info in kb_infos:
                assert scratch is not None
                files = []
                for rel, path in _snapshot_kb(settings.kb_dir / info["name"], scratch):
                    member = f"kb/{info['name']}/{rel}"
                    w.add_file(member, path, f"kb {info['name']}")
                    files.append(member)
                index["knowledge_bases"].append({
                    "name": info["name"], "embed": info["embed"], "settings": info["settings"],
                    "created_at": info["created_at"], "documents": info.get("documents"),
                    "chunks": info.get("chunks"), "files": files})
                summary.knowledge_bases.append(info["name"])
            index["files"] = dict(w.files)
            index_bytes = json.dumps(index, indent=2, ensure_ascii=False).encode()
            w.add_bytes(INDEX, index_bytes)
            sums = "".join(f"{v['sha256']}  {k}\n" for k, v in w.files.items())
            w.add_bytes(SUMS, sums.encode())
            if key is not None:
                signature = sign(key, index_bytes)
                w.add_bytes(SIGNATURE, json.dumps(signature.to_dict(), indent=2).encode())
                summary.signer = fingerprint(key.public_key())
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    summary.size = out.stat().st_size
    return summary


# -- import ---------------------------------------------------------------------------------------

def _member_path(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] != ROOT:
        raise InvalidBundle(f"the bundle holds an unsafe path {name!r}; refused")
    rel = "/".join(path.parts[1:])
    if not rel:
        raise InvalidBundle(f"the bundle holds an unsafe path {name!r}; refused")
    return rel


def _stale_staging(home: Path) -> None:
    """Remove staging directories left by imports that were killed."""
    for path in home.glob(".import-*"):
        pid = path.name.split("-")[1]
        alive = True
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            pass
        if not alive:
            shutil.rmtree(path, ignore_errors=True)


def _unpack(path: Path, staging: Path, progress: BundleProgress | None) -> dict[str, tuple[str, int]]:
    received: dict[str, tuple[str, int]] = {}
    try:
        tar = tarfile.open(path, mode="r|", bufsize=_CHUNK)  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError) as exc:
        raise InvalidBundle(f"{path}: not a readable bundle ({exc})") from None
    with tar:
        try:
            for member in tar:
                rel = _member_path(member.name)
                if not member.isreg():
                    raise InvalidBundle(f"the bundle holds a link or special file ({member.name}); refused")
                if rel in received:
                    raise InvalidBundle(f"the bundle holds {rel} twice; refused")
                check_disk_space(staging, member.size)
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                assert src is not None
                sha = hashlib.sha256()
                n = 0
                with target.open("wb") as out:
                    while chunk := src.read(_CHUNK):
                        sha.update(chunk)
                        out.write(chunk)
                        n += len(chunk)
                        if progress is not None:
                            progress(rel, n, member.size)
                received[rel] = (sha.hexdigest(), n)
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidBundle(f"{path}: damaged or truncated bundle ({exc}); nothing was installed") from None
    return received


def _check(staging: Path, received: dict[str, tuple[str, int]], trusted: list[Any]) -> tuple[dict[str, Any], str | None]:
    """Every digest, the index and the signature; returns the index and the signer."""
    if MARKER not in received or INDEX not in received:
        raise InvalidBundle("not a complete bendi bundle (no index); nothing was installed")
    index_bytes = (staging / INDEX).read_bytes()
    try:
        index = json.loads(index_bytes)
    except ValueError:
        raise InvalidBundle("the bundle's index is not JSON; nothing was installed") from None
    if index.get("format") != "bendi-bundle" or int(index.get("version", 0)) > FORMAT_VERSION:
        raise InvalidBundle(f"bundle format {index.get('format')} {index.get('version')} is not one "
                          "this bendi reads (update bendi)")
    signer = None
    if SIGNATURE in received:
        try:
            data = json.loads((staging / SIGNATURE).read_text())
        except ValueError:
            raise BadSignature("the bundle's signature file is not JSON") from None
        signer = verify(data, index_bytes, trusted)
    elif trusted:
        raise BadSignature("the bundle is not signed, and only signed bundles are accepted "
                             "here (--trust / BENDI_BUNDLE_TRUST); nothing was installed")
    files = index.get("files") or {}
    for rel, (digest, size) in received.items():
        if rel in (INDEX, SUMS, SIGNATURE):
            continue
        listed = files.get(rel)
        if listed is None:
            raise InvalidBundle(f"{rel} is in the bundle but not in its index (tampered?); nothing was installed")
        if listed.get("sha256") != digest or int(listed.get("size", -1)) != size:
            raise InvalidBundle(f"{rel}: sha256 mismatch (tampered or damaged); nothing was installed")
        if rel.startswith("blobs/sha256-") and rel.removeprefix("blobs/sha256-") != digest:
            raise InvalidBundle(f"{rel} does not hold the file its name promises; nothing was installed")
    missing = [rel for rel in files if rel not in received]
    if missing:
        raise InvalidBundle(f"the bundle is missing {', '.join(missing[:3])} (truncated?); nothing was installed")
    return index, signer


def import_bundle(settings: Settings, store: ModelStore, kb: Any, path: Path, *,
                  trust: list[Path] | None = None, force: bool = False,
                  progress: BundleProgress | None = None) -> BundleSummary:
    """Verify a bundle completely, then install its models and knowledge bases (all or none)."""
    keys = [k for p in (trust or []) for k in load_public_keys(p)]
    if settings.bundle_trust is not None:
        keys += load_public_keys(settings.bundle_trust)
    if not path.is_file():
        raise InvalidRequest(f"{path}: no such file")
    settings.home.mkdir(parents=True, exist_ok=True)
    _stale_staging(settings.home)
    staging = settings.home / f".import-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    summary = BundleSummary(path, size=path.stat().st_size)
    try:
        received = _unpack(path, staging, progress)
        index, summary.signer = _check(staging, received, keys)
        plan = _plan(store, kb, staging, index, set(received), force, summary)
        _install(store, kb, staging, index, plan, summary)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


def _plan(store: ModelStore, kb: Any, staging: Path, index: dict[str, Any], received: set[str],
          force: bool, summary: BundleSummary) -> list[dict[str, Any]]:
    """The models to install (conflicts refused before anything changes)."""
    todo = []
    for entry in index.get("models", []):
        name = str(entry["name"])
        digest = str(entry.get("digest", ""))
        # the index names files by path: only files that came in the bundle, under their own names
        if entry.get("blob") != f"blobs/{digest.replace(':', '-')}" or entry.get("blob") not in received \
                or entry.get("manifest") not in received:
            raise InvalidBundle(f"the index entry for {name} points outside the bundle; refused")
        blob = staging / entry["blob"]
        read_gguf(blob)  # a digest-correct file that is not a GGUF stays out too
        try:
            current: ModelRecord | None = store.get(name)
        except (ModelNotFound, InvalidModelFile):  # not installed, or its file is gone
            current = None
        if current is not None and current.digest == entry["digest"]:
            summary.unchanged.append(name)
            continue
        if current is not None and not force:
            raise Conflict(f"model {name} is already installed with other contents "
                           f"({current.digest[7:19]}); import with --force to replace it")
        todo.append(entry)
    for entry in index.get("knowledge_bases", []):
        if kb.exists(entry["name"]) and not force:
            raise Conflict(f"knowledge base {entry['name']} already exists; import with --force "
                           "to replace it")
    return todo


def _install(store: ModelStore, kb: Any, staging: Path, index: dict[str, Any],
             models: list[dict[str, Any]], summary: BundleSummary) -> None:
    done_models: list[str] = []
    done_kbs: list[str] = []
    try:
        for entry in models:
            manifest = json.loads((staging / entry["manifest"]).read_text(encoding="utf-8"))
            fields = {k: manifest.get(k) for k in ("parameters", "system", "template")}
            provenance = dict(entry.get("provenance") or {})
            provenance["bundle"] = {"file": summary.path.name, "created_at": index.get("created_at"),
                                    "signer": summary.signer}
            store.install_blob(staging / entry["blob"], entry["digest"], entry["name"],
                               source=str(manifest.get("source") or "bundle"), move=True,
                               provenance=provenance, **fields)
            done_models.append(entry["name"])
        for entry in index.get("knowledge_bases", []):
            directory = staging / "kb" / entry["name"]
            directory.mkdir(parents=True, exist_ok=True)
            kb.adopt(entry["name"], directory, embed=entry["embed"], settings=entry["settings"],
                     created_at=float(entry.get("created_at") or time.time()), replace=True)
            done_kbs.append(entry["name"])
    except BaseException:
        for name in reversed(done_kbs):
            with contextlib.suppress(Exception):
                kb.remove(name)
        for name in reversed(done_models):
            with contextlib.suppress(Exception):
                store.remove(name)
        raise
    summary.models = done_models
    summary.knowledge_bases = done_kbs
