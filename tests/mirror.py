"""A loopback mirror for pull tests and bench/pull.py: one threaded HTTP server that speaks the
shapes bendi pulls from, with Range requests, redirects to a "CDN" path, and knobs to misbehave.

- Hugging Face hub: GET /api/models/<org>/<repo>/tree/<rev>[/<dir>]?recursive=true (JSON list with
  LFS sha256), HEAD/GET /<org>/<repo>/resolve/<rev>/<path> -> 302 to /cdn/<sha256> with
  X-Repo-Commit, X-Linked-Etag, X-Linked-Size
- Ollama registry: GET /v2/<ns>/<model>/manifests/<tag>, GET /v2/<ns>/<model>/blobs/<digest> -> 307
- plain directory: GET/HEAD /files/<path>, /files/SHA256SUMS
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_tiny_gguf(path: Path, n_floats: int = 256 * 1024, license: str = "mit") -> Path:
    """A valid GGUF (one F32 tensor) of about 4 * n_floats bytes, for fast transfer tests."""
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    header = b"GGUF" + struct.pack("<IQQ", 3, 1, 3)
    header += s("general.architecture") + struct.pack("<I", 8) + s("llama")
    header += s("general.license") + struct.pack("<I", 8) + s(license)
    header += s("general.name") + struct.pack("<I", 8) + s(path.stem)
    header += s("w") + struct.pack("<I", 1) + struct.pack("<Q", n_floats) + struct.pack("<IQ", 0, 0)
    pad = (-len(header)) % 32
    with path.open("wb") as fh:
        fh.write(header + b"\0" * pad)
        block = os.urandom(1 << 20)
        left = n_floats * 4
        while left > 0:
            fh.write(block[:left])
            left -= min(left, len(block))
    return path


@dataclass
class Served:
    path: Path
    sha256: str
    size: int


@dataclass
class Mirror:
    """What the server serves and how it misbehaves (tests change these while it runs)."""

    hf: dict[str, dict[str, Served]] = field(default_factory=dict)  # repo -> path -> file
    ollama: dict[str, dict[str, Any]] = field(default_factory=dict)  # "ns/model:tag" -> manifest
    files: dict[str, Served] = field(default_factory=dict)  # plain directory
    blobs: dict[str, Served] = field(default_factory=dict)  # sha256 -> file (the "CDN")
    extra_blobs: dict[str, bytes] = field(default_factory=dict)
    #: bytes per second for blob bodies (None: as fast as possible)
    throttle: float | None = None
    #: close the connection after this many body bytes, once (then reset to None)
    drop_after: int | None = None
    #: flip the byte at this offset in every blob body served
    corrupt_at: int | None = None
    #: answer Range requests with the whole file (a server that ignores Range)
    ignore_range: bool = False
    #: HF tree listings without LFS metadata (some mirrors): the client must HEAD for the sha256
    hide_lfs: bool = False
    #: entries per page of an HF tree listing; the next page is announced in a Link header
    page_size: int = 1000
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    #: request targets as sent: an absolute URL means the client used this server as its proxy
    targets: list[str] = field(default_factory=list)

    def add_file(self, path: Path) -> Served:
        served = Served(path, sha256_of(path), path.stat().st_size)
        self.blobs[served.sha256] = served
        return served

    def add_hf(self, repo: str, filename: str, path: Path) -> Served:
        served = self.add_file(path)
        self.hf.setdefault(repo, {})[filename] = served
        return served

    def add_plain(self, filename: str, path: Path) -> Served:
        served = self.add_file(path)
        self.files[filename] = served
        return served

    def add_ollama(self, name: str, path: Path, *, system: str | None = None,
                   params: dict[str, Any] | None = None, license: str | None = None) -> Served:
        served = self.add_file(path)
        layers = [{"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{served.sha256}",
                   "size": served.size}]
        for media, content in (("system", system), ("params", json.dumps(params) if params else None),
                               ("license", license)):
            if content is not None:
                data = content.encode()
                digest = hashlib.sha256(data).hexdigest()
                self.extra_blobs[digest] = data
                layers.append({"mediaType": f"application/vnd.ollama.image.{media}",
                               "digest": f"sha256:{digest}", "size": len(data)})
        config = json.dumps({"model_format": "gguf", "model_family": "llama"}).encode()
        config_digest = hashlib.sha256(config).hexdigest()
        self.extra_blobs[config_digest] = config
        self.ollama[name] = {
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": f"sha256:{config_digest}", "size": len(config)},
            "layers": layers,
        }
        return served

    def checksum_file(self) -> bytes:
        return "".join(f"{f.sha256}  {name}\n" for name, f in self.files.items()).encode()

    def ranges_from(self) -> list[int]:
        """Start offsets of the Range requests blob bodies were asked with."""
        out = []
        for _, path, rng in self.requests:
            if rng and (path.startswith("/cdn/") or path.startswith("/files/")):
                out.append(int(rng.split("=")[1].split("-")[0]))
        return out


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        m = self.server.mirror
        url = urlsplit(self.path)
        path = unquote(url.path)
        m.requests.append((self.command, path, self.headers.get("Range")))
        m.targets.append(self.path)
        if path.startswith("/cdn/"):
            served = m.blobs.get(path.removeprefix("/cdn/"))
            return self._blob(served, head) if served else self._json(404, {"error": "not found"})
        if match := re.match(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$", path):
            cursor = re.search(r"cursor=(\d+)", url.query)
            return self._tree(match.group(1), match.group(3) or "", int(cursor.group(1)) if cursor else 0)
        if match := re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path):
            served = m.hf.get(match.group(1), {}).get(match.group(3))
            if served is None:
                return self._json(404, {"error": "Entry not found"})
            return self._redirect(302, f"/cdn/{served.sha256}", {
                "X-Repo-Commit": "0" * 40, "X-Linked-Etag": f'"{served.sha256}"',
                "X-Linked-Size": str(served.size), "ETag": '"' + "a" * 40 + '"'})
        if match := re.match(r"^/v2/(.+)/manifests/([^/]+)$", path):
            manifest = m.ollama.get(f"{match.group(1)}:{match.group(2)}")
            if manifest is None:
                return self._json(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            return self._json(200, manifest)
        if match := re.match(r"^/v2/(.+)/blobs/sha256:([0-9a-f]{64})$", path):
            digest = match.group(2)
            if digest in m.extra_blobs:
                return self._bytes(200, m.extra_blobs[digest], "application/octet-stream")
            if digest in m.blobs:
                return self._redirect(307, f"/cdn/{digest}", {})
            return self._json(404, {"errors": [{"code": "BLOB_UNKNOWN"}]})
        if path == "/files/SHA256SUMS":
            return self._bytes(200, m.checksum_file(), "text/plain", head)
        if path.startswith("/files/"):
            served = m.files.get(path.removeprefix("/files/"))
            return self._blob(served, head) if served else self._json(404, {"error": "not found"})
        self._json(404, {"error": f"no route {path}"})

    def _tree(self, repo: str, folder: str, cursor: int) -> None:
        files = self.server.mirror.hf.get(repo)
        if files is None:
            return self._json(404, {"error": "Repository not found"})
        out = []
        for name, served in files.items():
            if folder and not name.startswith(folder + "/"):
                continue
            entry: dict[str, Any] = {"type": "file", "oid": "b" * 40, "size": served.size, "path": name}
            if not self.server.mirror.hide_lfs:
                entry["lfs"] = {"oid": served.sha256, "size": served.size, "pointerSize": 135}
            out.append(entry)
        size = self.server.mirror.page_size
        page = out[cursor:cursor + size]
        data = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if cursor + size < len(out):
            base = urlsplit(self.path).path
            self.send_header("Link", f'<{base}?recursive=true&cursor={cursor + size}>; rel="next"')
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, data: Any) -> None:
        self._bytes(status, json.dumps(data).encode(), "application/json")

    def _bytes(self, status: int, data: bytes, ctype: str, head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _redirect(self, status: int, location: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Location", location)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _blob(self, served: Served, head: bool) -> None:
        m = self.server.mirror
        start, end = 0, served.size
        rng = self.headers.get("Range")
        status = 200
        if rng and not m.ignore_range:
            match = re.match(r"bytes=(\d+)-(\d*)$", rng)
            if match:
                start = int(match.group(1))
                end = int(match.group(2)) + 1 if match.group(2) else served.size
                end = min(end, served.size)
                status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{served.size}")
        self.end_headers()
        if head:
            return
        with served.path.open("rb") as fh:
            if m.throttle is None and m.drop_after is None and m.corrupt_at is None:
                self.wfile.flush()
                os.sendfile(self.connection.fileno(), fh.fileno(), start, end - start)
                return
            fh.seek(start)
            pos, sent, began = start, 0, time.monotonic()
            step = 64 * 1024
            while pos < end:
                data = bytearray(fh.read(min(step, end - pos)))
                if m.corrupt_at is not None and pos <= m.corrupt_at < pos + len(data):
                    data[m.corrupt_at - pos] ^= 0xFF
                if m.drop_after is not None and sent + len(data) > m.drop_after:
                    self.wfile.write(data[: m.drop_after - sent])
                    self.wfile.flush()
                    m.drop_after = None
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data)
                pos += len(data)
                sent += len(data)
                if m.throttle:
                    ahead = sent / m.throttle - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the sender, not waiting for a result


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    mirror: Mirror

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is normal here
            super().handle_error(request, client_address)


class MirrorServer:
    """Start with `with MirrorServer(mirror) as server:`; `server.url` is its base URL."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.mirror = mirror
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> MirrorServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
