"""Model names, following Ollama's conventions: `[namespace/]model[:tag]`, tag `latest` by default."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bendi.errors import InvalidRequest

_PART = r"[a-z0-9][a-z0-9._-]*"
_NAME_RE = re.compile(rf"^{_PART}(?:/{_PART})*$")
_TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
DEFAULT_TAG = "latest"


@dataclass(frozen=True, order=True)
class ModelName:
    name: str
    tag: str = DEFAULT_TAG

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def short(self) -> str:
        """`name` for the latest tag, `name:tag` otherwise."""
        return self.name if self.tag == DEFAULT_TAG else str(self)


def parse_name(text: str) -> ModelName:
    """Parse and normalise `name[:tag]` (case-insensitive, like Ollama)."""
    raw = text.strip().lower()
    name, sep, tag = raw.rpartition(":")
    if not sep or "/" in tag:
        name, tag = raw, DEFAULT_TAG
    if not _NAME_RE.match(name) or not _TAG_RE.match(tag) or ".." in name:
        raise InvalidRequest(
            f"invalid model name {text!r}: use name[:tag] with letters, digits, '.', '_', '-'",
            param="model",
        )
    return ModelName(name, tag)
