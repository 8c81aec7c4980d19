"""Durations ("30d", "12h", "90m") and points in time ("7d" ago, "2026-01-31", ISO 8601) as the
CLI and the admin API accept them."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from bendi.errors import InvalidRequest

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


def parse_duration(text: str, param: str = "duration") -> float:
    """Seconds in `text`: a number with a unit (s, m, h, d, w)."""
    found = _DURATION.match(text.strip().lower())
    if not found:
        raise InvalidRequest(f"invalid duration {text!r}: use a number and a unit, e.g. 30d, 12h, 90m",
                             param=param)
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_time(text: str, param: str = "since") -> float:
    """Seconds since the epoch for `text`: a duration ago ("7d"), a date ("2026-01-31", UTC
    midnight) or an ISO 8601 time (UTC unless it names a zone)."""
    text = text.strip()
    if _DURATION.match(text.lower()):
        return time.time() - parse_duration(text, param)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"invalid time {text!r}: use 7d (ago), 2026-01-31 or 2026-01-31T08:00:00",
                             param=param) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
