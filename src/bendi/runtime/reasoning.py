"""Split DeepSeek-R1 style output into reasoning and answer, streaming-safe.

Text between `<think>` and `</think>` is reasoning. R1 often omits the opening tag because its
chat template already opened the block; the caller says so with `in_reasoning=True`. Tags may be
split across tokens, so a suffix that could start a tag is held back until the next piece decides.
"""

from __future__ import annotations

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"

REASONING = "reasoning"
CONTENT = "content"


def prompt_opens_think(prompt: str) -> bool:
    """True when a rendered prompt ends inside an open think block (the template opened it)."""
    tail = prompt.rstrip()
    return tail.endswith(OPEN_TAG)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ReasoningSplitter:
    """Feed decoded text pieces; get back (kind, text) parts, kind being reasoning or content."""

    def __init__(self, in_reasoning: bool = False) -> None:
        # start: nothing but whitespace seen yet, an opening tag may come
        # reasoning: inside the think block
        # gap: just after </think>, swallowing the blank lines before the answer
        # content: the answer; no more tags are interpreted
        self._state = "reasoning_start" if in_reasoning else "start"
        self._buf = ""

    @property
    def in_reasoning(self) -> bool:
        return self._state in ("reasoning", "reasoning_start")

    def feed(self, text: str) -> list[tuple[str, str]]:
        self._buf += text
        out: list[tuple[str, str]] = []
        while True:
            before = (self._state, len(self._buf))
            self._step(out)
            if (self._state, len(self._buf)) == before:
                return out

    def flush(self) -> list[tuple[str, str]]:
        """Emit whatever is held back at the end of the stream."""
        out: list[tuple[str, str]] = []
        buf, self._buf = self._buf, ""
        if self._state in ("reasoning", "reasoning_start"):
            if buf.strip():
                out.append((REASONING, buf.lstrip() if self._state == "reasoning_start" else buf))
        elif self._state in ("start", "content") and buf:
            out.append((CONTENT, buf))
        return out

    def _step(self, out: list[tuple[str, str]]) -> None:
        state, buf = self._state, self._buf
        if state == "start":
            stripped = buf.lstrip()
            if stripped.startswith(OPEN_TAG):
                self._buf = stripped[len(OPEN_TAG) :]
                self._state = "reasoning_start"
            elif stripped and not OPEN_TAG.startswith(stripped):
                self._state = "content"
        elif state == "reasoning_start":
            # Leading whitespace and a repeated opening tag are not part of the reasoning.
            stripped = buf.lstrip()
            if stripped.startswith(OPEN_TAG):
                self._buf = stripped[len(OPEN_TAG) :]
            elif stripped and not OPEN_TAG.startswith(stripped):
                self._buf = stripped
                self._state = "reasoning"
        elif state == "reasoning":
            idx = buf.find(CLOSE_TAG)
            if idx >= 0:
                if idx:
                    out.append((REASONING, buf[:idx]))
                self._buf = buf[idx + len(CLOSE_TAG) :]
                self._state = "gap"
                return
            keep = _partial_suffix(buf, CLOSE_TAG)
            emit = buf[: len(buf) - keep]
            if emit:
                out.append((REASONING, emit))
                self._buf = buf[len(emit) :]
        elif state == "gap":
            stripped = buf.lstrip()
            if stripped:
                self._buf = stripped
                self._state = "content"
            else:
                self._buf = ""
        elif state == "content" and buf:
            out.append((CONTENT, buf))
            self._buf = ""
