"""Each kind of source, asked where a wanted model's files are and what their sha256 is.

Only metadata is fetched here (a file listing, a manifest, a checksum file); the bytes of the
model go through transfer.Download. A source that does not have the model answers None, so
the next one can be tried; a source that fails (unreachable, 5xx, no sha256) raises SourceError.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bendi.errors import InvalidModelFile, SourceError
from bendi.store.sources import Source
from bendi.store.transfer import Remote, reason_of, sha256_bytes
from bendi.store.wanted import Wanted

#: Ollama layer media types and what bendi does with each
OLLAMA_MODEL = "application/vnd.ollama.image.model"
OLLAMA_SMALL = {
    "application/vnd.ollama.image.system": "system",
    "application/vnd.ollama.image.params": "params",
    "application/vnd.ollama.image.license": "license",
    "application/vnd.ollama.image.template": "template",
}
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
#: small layers are read into memory; anything larger is not a system prompt or a licence
_SMALL_LIMIT = 4 * 1024 * 1024
CHECKSUM_FILES = ("SHA256SUMS", "sha256sums.txt", "SHA256SUMS.txt")
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class RemoteFile:
    """One file of a remote model: where it is and the digest it must have."""

    name: str
    digest: str  # sha256:<hex>
    size: int
    remote: Remote

    @property
    def url(self) -> str:
        return self.remote.location


@dataclass
class RemoteModel:
    """A wanted model found on a source: its GGUF file and, from Ollama, small extra layers."""

    source: Source
    reference: str
    model: RemoteFile
    #: system / params / license / template contents (already verified against their digests)
    extras: dict[str, str] = field(default_factory=dict)


def resolve(source: Source, wanted: Wanted, client: httpx.Client) -> RemoteModel | None:
    """Find `wanted` on `source`: None when the source does not have it."""
    kind = {"huggingface": _huggingface, "ollama": _ollama, "http": _directory, "path": _directory}
    try:
        return kind[source.kind](source, wanted, client)
    except httpx.HTTPError as exc:
        raise SourceError(f"{source.url}: {type(exc).__name__}: {exc}") from None


def _remote(source: Source, location: str) -> Remote:
    """Where the bytes are, with the source's token when it has one."""
    if source.token and source.kind != "path":
        return Remote(location, {"Authorization": f"Bearer {source.token}"})
    return Remote(location)


def _get(client: httpx.Client, url: str, **kwargs: Any) -> httpx.Response | None:
    """GET with a clear error; None for 404 (the source does not have it)."""
    response = client.get(url, **kwargs)
    if response.status_code == 404:
        return None
    if response.status_code in (401, 403):
        raise SourceError(f"{url}: HTTP {response.status_code} {reason_of(response)} (set `token` "
                        "for this source in the sources file if it needs one)")
    if response.status_code >= 400:
        raise SourceError(f"{url}: HTTP {response.status_code} {reason_of(response)}")
    return response


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise SourceError(f"{response.url}: the answer is not JSON (is this the right kind of "
                        "source?)") from None


# -- Hugging Face-style hubs ------------------------------------------------------------------------

def _hf_tree(source: Source, client: httpx.Client, repo: str, folder: str) -> list[dict[str, Any]] | None:
    """The hub's tree listing (`/api/models/<repo>/tree/<revision>[/<folder>]`), all pages."""
    rev = quote(source.revision, safe="")
    url: str | None = f"{source.url}/api/models/{repo}/tree/{rev}" + (f"/{quote(folder)}" if folder else "")
    params: dict[str, str] | None = {"recursive": "true"}
    entries: list[dict[str, Any]] = []
    while url:
        response = _get(client, url, params=params)
        if response is None:
            return entries or None
        page = _json(response)
        if not isinstance(page, list):
            raise SourceError(f"{response.url}: expected a file listing, got {str(page)[:100]}")
        entries.extend(e for e in page if isinstance(e, dict))
        following = response.links.get("next", {}).get("url")  # the hub paginates long listings
        url = str(response.url.join(following)) if following else None
        params = None
    return entries


def _huggingface(source: Source, wanted: Wanted, client: httpx.Client) -> RemoteModel | None:
    target = wanted.hf_target(source.repo_template)
    if target is None:
        return None
    repo, file = target
    folder = file.rpartition("/")[0]
    listing = _hf_tree(source, client, repo, folder)
    if listing is None:
        return None
    files = {str(e.get("path")): e for e in listing if e.get("type", "file") == "file"}
    entry = files.get(file) or next((e for p, e in files.items() if p.lower() == file.lower()), None)
    if entry is None:
        split = [p for p in files if re.search(rf"{re.escape(file[:-5])}-\d{{5}}-of-\d{{5}}\.gguf$", p, re.I)]
        if split:
            raise SourceError(f"{repo}: {file} exists only as {len(split)} split parts "
                            f"({split[0]}, ...); split GGUF files are not supported yet")
        return None
    path = str(entry["path"])
    url = f"{source.url}/{repo}/resolve/{quote(source.revision, safe='')}/{quote(path)}"
    lfs = entry.get("lfs") or {}
    digest, size = lfs.get("oid") or lfs.get("sha256"), lfs.get("size", entry.get("size"))
    if not digest:
        digest, size = _hf_head(client, url, size)
    if not isinstance(digest, str) or not _HEX.match(digest) or size is None:
        raise SourceError(f"{source.name}: no sha256 for {repo}/{path} (not an LFS file?); "
                        "bendi verifies every file it pulls, so it will not fetch it")
    return RemoteModel(source, f"{repo}/{path}@{source.revision}",
                       RemoteFile(path, f"sha256:{digest}", int(size), _remote(source, url)))


def _hf_head(client: httpx.Client, url: str, size: Any) -> tuple[str | None, Any]:
    """The sha256 from the resolve URL's headers: `X-Linked-Etag` for LFS files (the hub's own
    answer when the listing carries no LFS metadata, as some mirrors do)."""
    response = client.head(url, follow_redirects=False, headers={"Accept-Encoding": "identity"})
    if response.status_code >= 400:
        raise SourceError(f"{url}: HTTP {response.status_code}")
    etag = (response.headers.get("x-linked-etag") or response.headers.get("etag") or "")
    etag = etag.removeprefix("W/").strip('"')
    linked = response.headers.get("x-linked-size") or response.headers.get("content-length")
    return (etag if _HEX.match(etag) else None), int(linked) if linked else size


# -- Ollama registries --------------------------------------------------------------------------------

def _ollama(source: Source, wanted: Wanted, client: httpx.Client) -> RemoteModel | None:
    target = wanted.ollama_target()
    if target is None:
        return None
    name, tag = target
    base = f"{source.url}/v2/{name}"
    response = _get(client, f"{base}/manifests/{tag}", headers={"Accept": MANIFEST_V2})
    if response is None:
        return None
    manifest = _json(response)
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list):
        raise SourceError(f"{response.url}: not an image manifest")
    model = None
    extras: dict[str, str] = {}
    for layer in layers:
        media, digest, size = layer.get("mediaType"), str(layer.get("digest", "")), int(layer.get("size", 0))
        if not _HEX.match(digest.removeprefix("sha256:")):
            raise SourceError(f"{response.url}: layer digest {digest!r} is not sha256")
        if media == OLLAMA_MODEL:
            model = RemoteFile(f"{name}:{tag}", digest, size, _remote(source, f"{base}/blobs/{digest}"))
        elif media in OLLAMA_SMALL and size <= _SMALL_LIMIT:
            blob = _get(client, f"{base}/blobs/{digest}")
            if blob is None:
                raise SourceError(f"{base}/blobs/{digest}: missing")
            if sha256_bytes(blob.content) != digest.removeprefix("sha256:"):
                raise InvalidModelFile(f"{name}:{tag}: the {OLLAMA_SMALL[media]} layer does not "
                                       "match its sha256; nothing was installed")
            extras[OLLAMA_SMALL[media]] = blob.content.decode("utf-8", errors="replace")
        elif media in ("application/vnd.ollama.image.projector", "application/vnd.ollama.image.adapter"):
            raise SourceError(f"{name}:{tag} needs a {media.rsplit('.', 1)[-1]} layer, which bendi "
                            "does not run yet")
    if model is None:
        raise SourceError(f"{name}:{tag}: the manifest has no GGUF model layer")
    return RemoteModel(source, f"{name}:{tag}", model, extras)


# -- plain directories (http or a mounted path) with a checksum file ----------------------------

def parse_checksums(text: str) -> dict[str, str]:
    """sha256sum's output format: `<hex>  <path>` or `<hex> *<path>` (binary mode), one a line."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, path = line.partition(" ")
        path = path.strip().lstrip("*").removeprefix("./")
        if _HEX.match(digest.lower()) and path:
            sums[path] = digest.lower()
    return sums


def _read(source: Source, client: httpx.Client, rel: str) -> str | None:
    if source.kind == "path":
        try:
            return (Path(source.url) / rel).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise SourceError(f"{source.url}/{rel}: cannot read ({exc.strerror})") from None
    response = _get(client, f"{source.url}/{quote(rel)}")
    return None if response is None else response.text


def _directory(source: Source, wanted: Wanted, client: httpx.Client) -> RemoteModel | None:
    wanted_file = wanted.file if wanted.repo is None else f"{wanted.repo}/{wanted.file}"
    wanted_file = wanted_file or wanted.gguf_file()
    if not wanted_file:
        return None
    sums: dict[str, str] = {}
    for name in CHECKSUM_FILES:
        text = _read(source, client, name)
        if text is not None:
            sums = parse_checksums(text)
            break
    candidates = [wanted_file, wanted_file.split("/")[-1]]
    path = next((p for p in candidates if p in sums), None)
    if path is None:  # case-insensitive, and anywhere below the directory
        lower = {c.lower() for c in candidates}
        path = next((p for p in sums if p.lower() in lower or p.lower().split("/")[-1] in lower), None)
    if path is None:
        side = _read(source, client, f"{wanted_file}.sha256")
        if side is None:
            return None  # not listed: this source does not have it (or has it unverifiable)
        found = parse_checksums(side)
        if not found and side.split():  # a bare digest, as some tools write it
            found = {wanted_file: side.split()[0].lower()}
        digest = next(iter(found.values()), "")
        if not _HEX.match(digest):
            raise SourceError(f"{source.name}: {wanted_file}.sha256 holds no sha256")
        path, sums = wanted_file, {wanted_file: digest}
    if source.kind == "path":
        location = str(Path(source.url) / path)
        try:
            size = Path(location).stat().st_size
        except OSError:
            raise SourceError(f"{source.name}: {path} is listed in the checksum file but missing") from None
    else:
        location = f"{source.url}/{quote(path)}"
        head = client.head(location, headers={"Accept-Encoding": "identity"})
        if head.status_code == 404:
            raise SourceError(f"{source.name}: {path} is listed in the checksum file but missing")
        if head.status_code >= 400 or "content-length" not in head.headers:
            raise SourceError(f"{location}: HTTP {head.status_code}, no size")
        size = int(head.headers["content-length"])
    return RemoteModel(source, path, RemoteFile(path, f"sha256:{sums[path]}", size, _remote(source, location)))


def ollama_parameters(text: str) -> dict[str, Any]:
    """An Ollama params layer (JSON) as bendi manifest parameters."""
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
