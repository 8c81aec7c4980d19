"""Where `bendi pull` may fetch models from: the sources the user configured, and nothing else.

Sources come from BENDI_HOME/sources.toml (or BENDI_SOURCES_FILE) and from BENDI_SOURCES, which
is tried first. Reading them contacts nothing: a source is only ever reached by `bendi pull` or
/api/pull. The file::

    [[source]]
    name = "hf-mirror"
    kind = "huggingface"        # huggingface | ollama | http | path
    url = "https://hf-mirror.com"
    # revision = "main"         # huggingface: branch, tag or commit
    # repo_template = "unsloth/{model}-GGUF"   # where the GGUF conversions of catalog models live
    # token = "hf_..."          # sent as `Authorization: Bearer`

Kinds:
- huggingface: the Hub's API (`/api/models/<repo>/tree/<rev>`, `/<repo>/resolve/<rev>/<file>`) as
  huggingface.co, hf-mirror.com and ModelScope-compatible gateways serve it; sha256 from LFS metadata.
- ollama: an Ollama registry (`/v2/<namespace>/<model>/manifests/<tag>`, `/v2/.../blobs/<digest>`).
- http: a plain HTTP(S) directory of GGUF files with a SHA256SUMS file (sha256sum's format).
- path: a local or NFS directory laid out like `http`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bendi.config import Settings
from bendi.errors import InvalidRequest, NotAvailableOffline

KINDS = ("huggingface", "ollama", "http", "path")
#: spellings users reach for, mapped to the kind they mean
_KIND_ALIASES = {"hf": "huggingface", "hub": "huggingface", "modelscope": "huggingface",
                 "registry": "ollama", "https": "http", "dir": "path", "file": "path", "nfs": "path"}


@dataclass(frozen=True)
class Source:
    """One configured mirror."""

    name: str
    kind: str
    url: str
    revision: str = "main"
    repo_template: str | None = None
    token: str | None = field(default=None, repr=False)
    origin: str = ""

    def describe(self) -> dict[str, Any]:
        """What `bendi sources` shows (never the token)."""
        return {"name": self.name, "kind": self.kind, "url": self.url, "revision": self.revision,
                "repo_template": self.repo_template, "token": "set" if self.token else None,
                "from": self.origin}


def _kind(raw: str, where: str) -> str:
    kind = _KIND_ALIASES.get(raw.strip().lower(), raw.strip().lower())
    if kind not in KINDS:
        raise InvalidRequest(f"{where}: unknown source kind {raw!r} (use one of {', '.join(KINDS)})")
    return kind


def _source(entry: dict[str, Any], where: str) -> Source:
    unknown = set(entry) - {"name", "kind", "url", "revision", "repo_template", "token"}
    if unknown:
        raise InvalidRequest(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("name", "kind", "url"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise InvalidRequest(f"{where}: `{key}` is required (a string)")
    kind = _kind(entry["kind"], where)
    url = entry["url"].strip()
    if kind == "path":
        url = str(Path(url).expanduser())
    elif not url.startswith(("http://", "https://")):
        raise InvalidRequest(f"{where}: url {url!r} must start with http:// or https://")
    return Source(name=entry["name"].strip(), kind=kind, url=url.rstrip("/") or "/",
                  revision=str(entry.get("revision") or "main"),
                  repo_template=entry.get("repo_template"), token=entry.get("token"), origin=where)


def parse_sources_file(path: Path) -> list[Source]:
    """The sources a TOML file lists, in order; a missing file lists none."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"{path}: not valid TOML: {exc}") from None
    entries = data.get("source", [])
    if not isinstance(entries, list):
        raise InvalidRequest(f"{path}: use [[source]] tables, one per mirror")
    return [_source(e, f"{path} source #{i + 1}") for i, e in enumerate(entries)]


def parse_sources_env(text: str) -> list[Source]:
    """BENDI_SOURCES: `name=kind:url` items separated by commas."""
    sources = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, rest = item.partition("=")
        kind, sep2, url = rest.partition(":")
        if not sep or not sep2 or not name.strip():
            raise InvalidRequest(f"BENDI_SOURCES: {item!r} is not name=kind:url "
                                 "(e.g. hf=huggingface:https://hf-mirror.com)")
        sources.append(_source({"name": name, "kind": kind, "url": url}, "BENDI_SOURCES"))
    return sources


def load_sources(settings: Settings) -> list[Source]:
    """BENDI_SOURCES first, then the sources file; a name given twice keeps its first entry."""
    found = parse_sources_env(settings.sources or "") + parse_sources_file(settings.sources_path)
    seen: set[str] = set()
    out = []
    for source in found:
        if source.name not in seen:
            seen.add(source.name)
            out.append(source)
    return out


def pick_sources(settings: Settings, only: str | None = None) -> list[Source]:
    """The sources a pull tries, in order (`only` names one); a clear error when there are none."""
    sources = load_sources(settings)
    if not sources:
        raise NotAvailableOffline(
            f"no pull sources configured: add one to {settings.sources_path} or set BENDI_SOURCES "
            "(see docs/models.md), or copy a GGUF here and run `bendi import FILE --name NAME`")
    if only is not None:
        chosen = [s for s in sources if s.name == only]
        if not chosen:
            raise InvalidRequest(f"no source named {only!r} (configured: "
                                 f"{', '.join(s.name for s in sources)})", param="source")
        return chosen
    return sources
