"""Blocks to chunks: structure first (a heading starts a chunk), then sentence ends, a few hundred
characters each with a small overlap; tables split by rows, each piece with its header row."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bendi.kb.loaders import Block

TARGET_CHARS = 320  # a chunk is closed once it reaches this size ...
MAX_CHARS = 520  # ... and never grows past this unless one sentence is longer
OVERLAP_CHARS = 80  # trailing sentences repeated at the start of the next chunk of a section

# A sentence ends after 。！？； (plus closing quotes/brackets) or after .!?; followed by space.
_SENTENCE = re.compile(r"[^。！？；!?;.]*(?:[。！？；]+[”’」』）)\"']*|[.!?;]+[\"')\]]*(?=\s|$)|$)\s*")
_SOFT_BREAK = re.compile(r"[，、,：:）)]\s*|\s+")


@dataclass
class Chunk:
    ordinal: int
    text: str
    section: str  # heading path, " > " separated
    page: int | None
    page_end: int | None
    kind: str  # "text" | "table"
    #: spreadsheet/CSV rows of a table chunk (1-based, as the file numbers them); None for text
    row_start: int | None = None
    row_end: int | None = None


def split_sentences(text: str) -> list[str]:
    """Sentences with their end punctuation and trailing space kept, so "".join() is the text."""
    out: list[str] = []
    pos = 0
    while pos < len(text):
        m = _SENTENCE.match(text, pos)
        if m is None or m.end() == pos:
            # a '.' inside a word (3.5, e.g) does not end a sentence: take up to the next boundary
            nxt = re.search(r"[。！？；!?;.]", text[pos + 1 :])
            end = len(text) if nxt is None else pos + 1 + nxt.end()
            out.append(text[pos:end])
            pos = end
            continue
        out.append(m.group(0))
        pos = m.end()
    return _merge_false_ends(out)


def _merge_false_ends(parts: list[str]) -> list[str]:
    # "3." followed by "5 MPa" and "e.g." are not sentence ends: glue fragments that are tiny
    # or that end in a digit/abbreviation followed by a lowercase/digit start.
    out: list[str] = []
    for part in parts:
        if out and (len(out[-1].strip()) <= 3 or (re.search(r"(\d|\b[a-zA-Z])\.$", out[-1].rstrip())
                                                 and re.match(r"[0-9a-z]", part))):
            out[-1] += part
        else:
            out.append(part)
    return [p for p in out if p]


def _hard_split(sentence: str, limit: int) -> list[str]:
    """A sentence longer than `limit`: split at commas or spaces, else at the limit."""
    pieces: list[str] = []
    rest = sentence
    while len(rest) > limit:
        cut = 0
        for m in _SOFT_BREAK.finditer(rest, 0, limit):
            if m.end() >= limit // 3:
                cut = m.end()
        if cut == 0:
            cut = limit
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


class _Builder:
    def __init__(self, target: int, limit: int, overlap: int) -> None:
        self.target, self.limit, self.overlap = target, limit, overlap
        self.chunks: list[Chunk] = []
        self.parts: list[tuple[str, int | None]] = []  # (sentence, page)
        self.fresh = 0  # parts added since the overlap carried in
        self.section = ""

    def size(self) -> int:
        return sum(len(p) for p, _ in self.parts)

    def add_sentence(self, sentence: str, page: int | None) -> None:
        if self.fresh and self.parts and page != self.parts[-1][1]:
            self.close()  # a new page starts a chunk, so a citation names one page
        if self.fresh and self.size() + len(sentence) > self.limit:
            self.close(carry=True)
        self.parts.append((sentence, page))
        self.fresh += 1
        if self.size() >= self.target:
            self.close(carry=True)

    def paragraph_break(self) -> None:
        if self.parts and self.fresh:
            last, page = self.parts[-1]
            if not last.endswith("\n"):
                self.parts[-1] = (last.rstrip() + "\n", page)

    def close(self, carry: bool = False) -> None:
        if not self.fresh:
            self.parts.clear()
            return
        text = "".join(p for p, _ in self.parts).strip()
        pages = [pg for _, pg in self.parts if pg is not None]
        if text:
            self.chunks.append(Chunk(len(self.chunks), text, self.section, pages[0] if pages else None,
                                     pages[-1] if pages else None, "text"))
        kept: list[tuple[str, int | None]] = []
        if carry and self.overlap:
            size = 0
            for part in reversed(self.parts):
                if size + len(part[0]) > self.overlap:
                    break
                kept.insert(0, part)
                size += len(part[0])
        self.parts = kept
        self.fresh = 0

    def add_table(self, rows: list[list[str]], page: int | None, numbers: list[int] | None = None) -> None:
        self.close()
        numbers = numbers if numbers and len(numbers) == len(rows) else [None] * len(rows)  # type: ignore[list-item]
        header = " | ".join(rows[0])
        body = [(" | ".join(r), n) for r, n in zip(rows[1:], numbers[1:], strict=True)]
        if not body:
            self.chunks.append(Chunk(len(self.chunks), header, self.section, page, page, "table",
                                     numbers[0], numbers[0]))
            return
        piece: list[tuple[str, int | None]] = []
        for line, n in body:
            if piece and len(header) + sum(len(x) + 1 for x, _ in piece) + len(line) > self.limit:
                self._table_chunk(header, piece, page)
                piece = []
            piece.append((line, n))
        if piece:
            self._table_chunk(header, piece, page)

    def _table_chunk(self, header: str, lines: list[tuple[str, int | None]], page: int | None) -> None:
        text = header + "\n" + "\n".join(x for x, _ in lines)
        self.chunks.append(Chunk(len(self.chunks), text, self.section, page, page, "table",
                                 lines[0][1], lines[-1][1]))


def chunk_blocks(blocks: list[Block], *, target: int = TARGET_CHARS, limit: int = MAX_CHARS,
                 overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    """Chunks in document order. Headings close the current chunk and name the section."""
    b = _Builder(target, limit, overlap)
    path: list[tuple[int, str]] = []
    for block in blocks:
        if block.kind == "heading":
            b.close()
            while path and path[-1][0] >= block.level:
                path.pop()
            path.append((block.level, block.text.strip()))
            b.section = " > ".join(t for _, t in path)
            continue
        if block.kind == "table":
            b.add_table(block.rows, block.page, block.row_numbers)
            continue
        for sentence in split_sentences(block.text):
            for piece in _hard_split(sentence, limit) if len(sentence) > limit else [sentence]:
                b.add_sentence(piece, block.page)
        b.paragraph_break()
    b.close()
    return b.chunks
