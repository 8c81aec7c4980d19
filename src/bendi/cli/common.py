"""Helpers shared by the command modules."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import click

from bendi.config import Settings
from bendi.services import Services


def services(ctx: click.Context, **overrides: Any) -> Services:
    """The services for this invocation, built on first use (from the settings with `overrides`
    applied) and closed when the command ends."""
    root = ctx.find_root()
    svc = root.meta.get("bendi.services")
    if svc is None:
        settings: Settings = root.obj
        svc = Services.build(settings.replace(**overrides))
        root.meta["bendi.services"] = svc
        root.call_on_close(svc.close)
    return svc


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(c) for c in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        lines.append("   ".join(c + " " * (w - _width(c)) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _width(text: str) -> int:
    # CJK characters take two columns in a terminal.
    return sum(2 if "\u1100" <= ch <= "\uffdc" and not ("\ua000" <= ch <= "\uabff") else 1 for ch in text)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_age(timestamp: float) -> str:
    seconds = max(0.0, time.time() - timestamp)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"
