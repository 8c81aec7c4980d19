"""Finding where a JSON value ends in text that is still arriving, without parsing it twice."""

from __future__ import annotations

import json
from typing import Any

INCOMPLETE = -1
INVALID = -2


def value_end(text: str, start: int) -> int:
    """Index just past the JSON object or array that opens at `text[start]`; INCOMPLETE when the
    text stops inside it, INVALID when `text[start]` opens neither or brackets do not match."""
    if start >= len(text):
        return INCOMPLETE
    if text[start] not in "{[":
        return INVALID
    stack: list[str] = []
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not stack or stack.pop() != ch:
                return INVALID
            if not stack:
                return i + 1
    return INCOMPLETE


def loads(text: str) -> Any:
    """json.loads that tolerates raw control characters inside strings (small models write raw
    newlines in string values); ValueError when it is not JSON."""
    return json.loads(text, strict=False)


def skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i
