"""Files on disk for the store: content digests, blobs placed atomically (hard link, copy or
symlink), unused blobs swept, JSON written atomically, and the store's cross-process lock."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 4 * 1024 * 1024


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def place_blob(source: Path, blob: Path, link: str) -> None:
    """Put `source` at `blob` through a temporary name, so `blob` is whole or absent.

    link: "auto" hard-links when on the same filesystem and copies otherwise; "copy" always
    copies; "symlink" points at the file where it lies.
    """
    blob.parent.mkdir(parents=True, exist_ok=True)
    tmp = blob.parent / f".partial-{os.getpid()}-{blob.name}"
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


def sweep_blobs(blobs: Path, used: set[str]) -> None:
    """Delete blobs no manifest uses, and partial files left by a killed import or create."""
    if not blobs.is_dir():
        return
    for blob in blobs.iterdir():
        unused = blob.name.startswith("sha256-") and blob.name not in used
        abandoned = blob.name.startswith(".partial-") and not pid_alive(blob.name.split("-")[1])
        if unused or abandoned:
            blob.unlink()


def sweep_trees(trees: Path, used: set[str]) -> None:
    """Delete model trees (directories of links) no manifest uses."""
    if not trees.is_dir():
        return
    for tree in trees.iterdir():
        unused = tree.name.startswith("sha256-") and tree.name not in used
        abandoned = tree.name.startswith(".partial-") and not pid_alive(tree.name.split("-")[1])
        if (unused or abandoned) and tree.is_dir():
            for link in tree.iterdir():
                link.unlink()
            tree.rmdir()


def pid_alive(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def dir_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on `root` shared with other processes (flock on root/.lock)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`; None when it is missing, unreadable or not an object."""
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
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
