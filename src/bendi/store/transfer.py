"""Resumable, verified transfers of one content-addressed file.

A blob is downloaded into BENDI_HOME/models/partial/<sha256>.partial, next to a small JSON state
file that records, per part, how many bytes are on disk. Parts of a large file are fetched over
parallel connections with HTTP Range requests and written in place with pwrite. The state is
saved often, and only ever claims bytes that were written before it, so a Ctrl-C, a crash or a
kill -9 loses at most the last second of work: the next pull continues from there.

The sha256 is computed while the file arrives: a hasher thread follows the first incomplete part,
so a complete download is verified without a second read of the file. Nothing in here registers
a model; the caller moves the verified file into the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bendi import __version__
from bendi.errors import (
    BendiError,
    Cancelled,
    DigestMismatch,
    InsufficientStorage,
    InvalidModelFile,
    SourceError,
)

log = logging.getLogger(__name__)

CHUNK = 1 << 20
#: parts are never smaller than this: a Range request costs a round trip and a new TCP window
MIN_PART = 64 * 1024 * 1024
RETRIES = 5
#: seconds without a byte before a connection counts as dropped (and is retried)
STALL_SECONDS = 30.0
_SAVE_EVERY = 0.5  # seconds between state saves
USER_AGENT = f"bendi/{__version__}"


#: opens [start, end) of the remote file and yields its bytes; returns True when ranges work
Opener = Callable[[int, int], "RangeReader"]


class RangeReader:
    """An open byte range: iterate for chunks; `ranged` is False when the source sent it all."""

    ranged: bool = True

    def __iter__(self) -> Iterator[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _KeepAuthOnSameHost(urllib.request.HTTPRedirectHandler):
    """Redirects keep the Range header (urllib copies it) but drop a token sent to another host:
    a hub's LFS redirect to its CDN must not carry the user's token along."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


#: bodies go through urllib (http.client's readinto into one buffer): httpx reads a body in 64 KB
#: pieces through h11 and measured ~3x slower than curl on loopback, while this matches curl.
#: build_opener's ProxyHandler reads HTTP(S)_PROXY / ALL_PROXY / NO_PROXY, as httpx does (when it
#: is built, so one is built per request: the environment of the moment counts).
_RETRYABLE = (OSError, http.client.HTTPException, httpx.TransportError)


class _HttpRange(RangeReader):
    def __init__(self, url: str, start: int, end: int, headers: dict[str, str]) -> None:
        request = urllib.request.Request(url, headers={
            "User-Agent": USER_AGENT, **headers, "Range": f"bytes={start}-{end - 1}",
            "Accept-Encoding": "identity"})
        try:
            opener = urllib.request.build_opener(_KeepAuthOnSameHost())
            self.response = opener.open(request, timeout=STALL_SECONDS)
        except urllib.error.HTTPError as exc:
            body = exc.read(500).decode("utf-8", "replace").strip()
            exc.close()
            if exc.code >= 500 or exc.code == 429:
                raise ConnectionError(f"HTTP {exc.code}") from None  # retried with back-off
            raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}{f': {body}' if body else ''}") from None
        status = self.response.status
        length = int(self.response.headers.get("content-length", "-1"))
        self.ranged = status == 206 or (start == 0 and end >= length >= 0)
        self.url = self.response.geturl()  # after redirects: the CDN the other parts go to
        self.buffer = memoryview(bytearray(CHUNK))

    def __iter__(self) -> Iterator[bytes]:
        while n := self.response.readinto(self.buffer):
            yield self.buffer[:n]  # type: ignore[misc]  # written before the next read reuses it

    def close(self) -> None:
        self.response.close()


class _FileRange(RangeReader):
    def __init__(self, path: Path, start: int, end: int) -> None:
        try:
            self.fh = path.open("rb")
        except OSError as exc:
            raise SourceError(f"{path}: cannot read ({exc.strerror})") from None
        self.fh.seek(start)
        self.left = end - start

    def __iter__(self) -> Iterator[bytes]:
        while self.left > 0:
            data = self.fh.read(min(CHUNK * 4, self.left))
            if not data:
                return
            self.left -= len(data)
            yield data

    def close(self) -> None:
        self.fh.close()


def _length(response: httpx.Response) -> int:
    try:
        return int(response.headers.get("content-length", "-1"))
    except ValueError:
        return -1


def reason_of(response: httpx.Response) -> str:
    try:
        text = response.text.strip()
    except (httpx.HTTPError, UnicodeDecodeError):
        text = ""
    if text.startswith("{"):
        with contextlib.suppress(ValueError, AttributeError):
            data = json.loads(text)
            text = str(data.get("error") or data.get("message") or data)
    return (response.reason_phrase or "") + (f": {text[:200]}" if text else "")


def http_client(token: str | None = None) -> httpx.Client:
    """The client every pull uses: proxies from HTTP(S)_PROXY/NO_PROXY (httpx's trust_env),
    redirects followed (mirrors send LFS files to a CDN), a stall after 30 s of silence is an error."""
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(headers=headers, follow_redirects=True, trust_env=True,
                        timeout=httpx.Timeout(STALL_SECONDS, connect=15.0),
                        limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))


@dataclass
class Part:
    offset: int
    size: int
    done: int = 0

    @property
    def complete(self) -> bool:
        return self.done >= self.size


@dataclass
class Remote:
    """Where a blob's bytes come from: an http(s) URL or a local path."""

    location: str
    headers: dict[str, str] | None = None

    @property
    def is_file(self) -> bool:
        return not self.location.startswith(("http://", "https://"))


class Download:
    """One blob on its way into the store: `run()` fetches, verifies and returns the file."""

    def __init__(self, directory: Path, digest: str, size: int) -> None:
        self.hex = digest.removeprefix("sha256:")
        if len(self.hex) != 64 or any(c not in "0123456789abcdef" for c in self.hex):
            raise InvalidModelFile(f"not a sha256 digest: {digest!r}")
        self.size = size
        self.directory = directory
        self.path = directory / f"{self.hex}.partial"
        self.state_path = directory / f"{self.hex}.json"
        self.parts: list[Part] = []
        self._error: BaseException | None = None
        self._lock_fh: Any = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def completed(self) -> int:
        return sum(min(p.done, p.size) for p in self.parts)

    def _load(self, connections: int) -> None:
        try:
            state = json.loads(self.state_path.read_text())
            parts = [Part(int(p["offset"]), int(p["size"]), int(p["done"])) for p in state["parts"]]
            if state.get("size") == self.size and self.path.exists() and \
                    sum(p.size for p in parts) == self.size:
                self.parts = parts
                return
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # no usable state: start over
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        n = max(1, min(connections, self.size // MIN_PART))
        step = -(-self.size // n) if self.size else 0
        self.parts = [Part(o, min(step, self.size - o)) for o in range(0, self.size, step)] if step \
            else [Part(0, 0)]

    def _save(self) -> None:
        data = {"size": self.size, "parts": [p.__dict__ for p in self.parts]}
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.state_path)

    def discard(self) -> None:
        """Forget the partial file (after a digest mismatch, say)."""
        for path in (self.path, self.state_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One process at a time per blob; a second pull of the same file waits for the first."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = self.directory / f"{self.hex}.lock"
        with lock.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                if not self.path.exists() and not self.state_path.exists():
                    lock.unlink(missing_ok=True)  # done: a waiter holding it only checks the store
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- transfer ------------------------------------------------------------------------------

    def prepare(self, connections: int) -> int:
        """Read the saved state; returns the bytes already on disk."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._load(connections)
        return self.completed

    def run(self, remote: Remote, *, connections: int,
            progress: Callable[[int], None] | None = None,
            cancel: threading.Event | None = None) -> Path:
        """Fetch what is missing, verify the sha256, return the complete file (still partial/)."""
        if not self.parts:
            self.prepare(connections)
        cancel = cancel or threading.Event()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != self.size:
                os.ftruncate(fd, self.size)  # sparse: parts write into their own region
            opener = self._opener(remote)
            self._hashed = ""
            first = next((p for p in self.parts if not p.complete), None)
            reader = opener(first.offset + first.done, first.offset + first.size) if first else None
            if reader is not None and not reader.ranged:
                # the source ignores Range: one stream from byte 0
                if first is not None and first.offset + first.done > 0:
                    reader.close()
                    reader = opener(0, self.size)
                self.parts = [Part(0, self.size)]
                first = self.parts[0]
            if isinstance(reader, _HttpRange):
                same_host = urlsplit(reader.url).netloc == urlsplit(remote.location).netloc
                # the other parts skip the redirect (and keep a token only on the same host)
                remote = Remote(reader.url, remote.headers if same_host else None)
                opener = self._opener(remote)
            self._fetch_all(fd, opener, first, reader, progress, cancel)
            digest = self._hashed
        finally:
            os.close(fd)
        if digest != self.hex:
            self.discard()
            raise DigestMismatch(
                f"sha256 mismatch: expected {self.hex[:12]}..., received {digest[:12]}...: the "
                "download was discarded, nothing was installed; pull again (a mirror serving a "
                "damaged file needs fixing at the source)")
        return self.path

    def _opener(self, remote: Remote) -> Opener:
        if remote.is_file:
            path = Path(remote.location)
            return lambda start, end: _FileRange(path, start, end)
        headers = dict(remote.headers or {})
        return lambda start, end: _HttpRange(remote.location, start, end, headers)

    def _fetch_all(self, fd: int, opener: Opener, first: Part | None, reader: RangeReader | None,
                   progress: Callable[[int], None] | None, cancel: threading.Event) -> None:
        threads = [
            threading.Thread(target=self._part_worker, name=f"pull-{self.hex[:8]}-{part.offset}",
                             args=(fd, opener, part, reader if part is first else None, cancel),
                             daemon=True)
            for part in self.parts if not part.complete
        ]
        hasher = threading.Thread(target=self._hash_worker, args=(fd, cancel), daemon=True,
                                  name=f"hash-{self.hex[:8]}")
        for t in (*threads, hasher):
            t.start()
        last_save = time.monotonic()
        try:
            while self._error is None:
                alive = [t for t in threads if t.is_alive()]
                if not alive:
                    break
                alive[0].join(0.1)
                if progress is not None:
                    progress(self.completed)
                if time.monotonic() - last_save >= _SAVE_EVERY:
                    self._save()
                    last_save = time.monotonic()
        except BaseException:
            cancel.set()  # Ctrl-C or a closed client: stop the workers, keep what they wrote
            raise
        finally:
            if self._error is not None:
                cancel.set()
            for t in threads:
                # a worker stuck in a read of a stalled connection notices `cancel` only when the
                # read returns; saving without it is safe (`done` never runs ahead of the bytes)
                t.join(None if not cancel.is_set() else 2.0)
            self._save()
        if self._error is not None:
            raise self._error
        if not all(p.complete for p in self.parts):
            raise Cancelled("pull cancelled; run it again to resume")
        hasher.join()
        if self._error is not None:
            raise self._error
        if progress is not None:
            progress(self.completed)

    def _part_worker(self, fd: int, opener: Opener, part: Part, reader: RangeReader | None,
                     cancel: threading.Event) -> None:
        tries = 0
        while not part.complete and not cancel.is_set():
            try:
                if reader is None:
                    reader = opener(part.offset + part.done, part.offset + part.size)
                    if not reader.ranged and part.offset + part.done > 0:
                        raise SourceError("the source stopped honouring Range requests mid-transfer")
                try:
                    for chunk in reader:
                        if cancel.is_set():
                            return
                        room = part.size - part.done
                        if len(chunk) > room:
                            chunk = chunk[:room]
                        os.pwrite(fd, chunk, part.offset + part.done)
                        part.done += len(chunk)  # only after the bytes are written
                        tries = 0
                        if part.complete:
                            break
                finally:
                    reader.close()
                    reader = None
                if not part.complete:
                    raise httpx.RemoteProtocolError("connection closed before the part was complete")
            except _RETRYABLE as exc:
                if isinstance(exc, OSError) and exc.errno == 28:  # ENOSPC
                    self._error = InsufficientStorage(f"disk full while writing {self.path}")
                    return
                tries += 1
                if tries > RETRIES:
                    self._error = SourceError(f"transfer failed after {RETRIES} retries: {exc}")
                    return
                log.info("part at %d: %s; retrying from byte %d", part.offset, exc,
                         part.offset + part.done)
                if cancel.wait(min(8.0, 0.25 * 2 ** tries)):
                    return
            except BendiError as exc:
                self._error = exc
                return
            except BaseException as exc:  # a bug: surface it in the caller's thread
                self._error = exc
                return

    def _hash_worker(self, fd: int, cancel: threading.Event) -> None:
        """Hash the file in order, following the downloads: bytes are read once they are on disk."""
        h = hashlib.sha256()
        pos = 0
        try:
            while pos < self.size:
                ready = self._contiguous()
                if ready <= pos:
                    if cancel.is_set() or self._error is not None:
                        return
                    time.sleep(0.005)
                    continue
                while pos < ready:
                    data = os.pread(fd, min(8 * CHUNK, ready - pos), pos)
                    if not data:
                        raise OSError(f"short read at {pos}")
                    h.update(data)
                    pos += len(data)
            self._hashed = h.hexdigest()
        except OSError as exc:
            self._error = SourceError(f"cannot read back {self.path}: {exc}")

    def _contiguous(self) -> int:
        """Bytes from 0 that are complete on disk."""
        end = 0
        for part in self.parts:
            if part.offset != end:
                break
            end = part.offset + min(part.done, part.size)
            if not part.complete:
                break
        return end


def check_disk_space(directory: Path, needed: int, *, margin: int = 256 * 1024 * 1024) -> None:
    """Refuse to start a transfer that cannot fit (plus a margin for the rest of the system)."""
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if needed + margin > free:
        raise InsufficientStorage(
            f"not enough disk space in {directory}: the download needs {needed / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free (and {margin // 2**20} MB are kept free)")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
