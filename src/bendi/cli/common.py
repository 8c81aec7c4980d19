"""Helpers shared by the command modules."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import click

from bendi.config import Settings
from bendi.errors import InvalidRequest
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
    widths = [max(display_width(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        lines.append("   ".join(c + " " * (w - display_width(c)) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal: wide and fullwidth characters (CJK, fullwidth
    punctuation such as （）, most emoji) take two, combining marks none."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def confirm(question: str, yes: bool) -> None:
    """Ask before destroying something: on a terminal, a yes/no question; without one (piped
    input, scripts), nothing is destroyed unless -y was given."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise InvalidRequest(f"{question} There is no terminal to ask on; add -y to confirm.")
    click.confirm(question, abort=True)


@contextlib.contextmanager
def library_messages() -> Iterator[list[str]]:
    """Collect what libraries log or warn (pypdf's "EOF marker not found", ...) instead of
    letting it break a progress bar; the caller shows the messages where they belong."""
    collected: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            collected.append(f"{record.name.split('.')[0]}: {record.getMessage()}")

    root = logging.getLogger()
    streams = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    collector = _Collect(logging.WARNING)
    for handler in streams:
        root.removeHandler(handler)
    root.addHandler(collector)
    last_resort, logging.lastResort = logging.lastResort, None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield collected
        collected.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    finally:
        logging.lastResort = last_resort
        root.removeHandler(collector)
        for handler in streams:
            root.addHandler(handler)


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
