"""Reading tool calls out of a model's answer as it streams.

Text before a call streams on at once; only a suffix that could be the start of a call opener is
held back (openers may be split across tokens). A call is reported once it is complete and
valid: a known function and arguments that are a JSON object with the required keys. A region
that does not hold valid calls goes out as plain text, so invalid arguments never reach the
client as a call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bendi.runtime.tools.formats import RawCall, Scan, ToolFormat
from bendi.runtime.tools.jsonscan import loads
from bendi.runtime.tools.spec import Function


@dataclass
class ParsedCall:
    """A complete, valid call; `arguments` is JSON text of an object."""

    id: str
    name: str
    arguments: str
    index: int


Piece = str | ParsedCall


def _partial_suffix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of one of `markers`."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best


class ToolCallParser:
    """Feed answer text (reasoning already split off); get back text pieces and calls."""

    def __init__(self, fmt: ToolFormat, functions: list[Function]) -> None:
        self.fmt = fmt
        self.functions = {f.name: f for f in functions}
        self.calls: list[ParsedCall] = []
        self._buf = ""
        # text: ordinary answer text; region: inside a call; between: right after a call
        self._state = "text"
        self._at_start = True  # nothing but whitespace written yet: leading openers count
        #: the text of the region just opened (opener onwards), until `take_opened` reads it
        self._opened: str | None = None
        #: the model repeated a call it already made (small models loop): the answer is over
        self.repeated = False

    @property
    def in_call(self) -> bool:
        return self._state == "region"

    def take_opened(self) -> str | None:
        """The text of a call region opened by the last feed (once), else None."""
        opened, self._opened = self._opened, None
        return opened

    def feed(self, text: str) -> list[Piece]:
        self._buf += text
        out: list[Piece] = []
        self._run(out, final=False)
        return out

    def flush(self) -> list[Piece]:
        """Whatever is held back, at the end of the answer."""
        out: list[Piece] = []
        self._run(out, final=True)
        if self._buf:
            if self._state == "text" or self._buf.strip(" \t\r\n" + self.fmt.separators):
                out.append(self._buf)
            self._buf = ""
        return out

    # -- the state machine ----------------------------------------------------------------------

    def _run(self, out: list[Piece], final: bool) -> None:
        while self._buf:
            if self._state == "region":
                if not self._region(out, final):
                    return
            elif not self._look_for_opener(out, final):
                return

    def _region(self, out: list[Piece], final: bool) -> bool:
        scan = self.fmt.scan(self._buf, final)
        if scan is None:
            if len(self._buf) <= self.fmt.max_region:
                return False
            scan = Scan(len(self._buf), invalid=True)
        region, self._buf = self._buf[:scan.consumed], self._buf[scan.consumed:]
        calls = [self._valid(c) for c in scan.calls]
        if scan.invalid or any(c is None for c in calls):
            out.append(region)
            self._state, self._at_start = "text", False
            return True
        for call in calls:
            assert call is not None
            if any((c.name, c.arguments) == (call.name, call.arguments) for c in self.calls):
                self.repeated = True
                continue
            call.index = len(self.calls)
            self.calls.append(call)
            out.append(call)
        self._state = "between"
        return True

    def _look_for_opener(self, out: list[Piece], final: bool) -> bool:
        buf = self._buf
        pos, opener = self._find_opener(buf)
        if opener is not None:
            before = buf[:pos]
            if self._state == "text" and before:
                out.append(before)
            self._buf = buf[pos:]
            if self._state == "text" and not self.calls:
                self._opened = self._buf
            self._state = "region"
            return True
        filler = " \t\r\n" + (self.fmt.separators if self._state == "between" else "")
        if (self._at_start or self._state == "between") and not buf.strip(filler):
            return False  # only whitespace so far: a leading opener may still come
        if self._state == "between":
            self._state = "text"
            buf = self._buf = buf.lstrip(filler)
        hold = 0 if final else _partial_suffix(buf, self.fmt.openers + self._leading())
        emit = buf[:len(buf) - hold]
        if emit:
            out.append(emit)
            if emit.strip():
                self._at_start = False
        self._buf = buf[len(emit):]
        return False

    def _leading(self) -> tuple[str, ...]:
        return self.fmt.leading_openers if (self._at_start or self._state == "between") else ()

    def _find_opener(self, buf: str) -> tuple[int, str | None]:
        best, found = len(buf) + 1, None
        for opener in self.fmt.openers:
            at = buf.find(opener)
            if 0 <= at < best:
                best, found = at, opener
        lead = self._leading()
        if lead:
            filler = " \t\r\n" + (self.fmt.separators if self._state == "between" else "")
            stripped = buf.lstrip(filler)
            at = len(buf) - len(stripped)
            for opener in lead:
                if stripped.startswith(opener) and at < best:
                    best, found = at, opener
        return (best, found) if found is not None else (-1, None)

    def _valid(self, raw: RawCall | None) -> ParsedCall | None:
        if raw is None or not isinstance(raw.name, str):
            return None
        function = self.functions.get(raw.name.strip())
        if function is None:
            return None
        args: Any = raw.arguments
        if isinstance(args, str):
            try:
                args = loads(args) if args.strip() else {}
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        required = function.parameters.get("required") or []
        if any(key not in args for key in required if isinstance(key, str)):
            return None
        call_id = raw.id if isinstance(raw.id, str) and raw.id else self.fmt.new_id()
        return ParsedCall(call_id, function.name, json.dumps(args, ensure_ascii=False), -1)
