"""OCR for scanned PDF pages and images: rapidocr-onnxruntime, whose wheel carries the Chinese
PP-OCRv4 detection and recognition models and the text-direction classifier (no download).

A page image becomes text lines with boxes; lines are put back in reading order, grouped into
paragraphs, and rows of several cells that line up become a table block (an inspection form is
mostly a table). A page turned by 90 or 270 degrees is detected by its text lines running
vertically and turned back before it is read; upside-down lines are handled by the classifier.
"""

from __future__ import annotations

import logging
import os
import statistics
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from bendi.errors import NotAvailableOffline
from bendi.kb.loaders import Block

log = logging.getLogger(__name__)

#: recognised lines below this confidence are dropped (PP-OCR scores noise at 0.3-0.6)
MIN_SCORE = 0.6


@dataclass
class Line:
    text: str
    score: float
    left: float
    top: float
    right: float
    bottom: float

    @property
    def height(self) -> float:
        return self.bottom - self.top

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2


class OcrEngine:
    """rapidocr's pipeline (detect, classify direction, recognise), loaded once, one page at a time."""

    def __init__(self, threads: int | None = None) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise NotAvailableOffline(
                "OCR needs rapidocr-onnxruntime (pip install --no-deps rapidocr-onnxruntime==1.4.4, with"
                f" onnxruntime and opencv-python-headless): {exc}") from None
        n = threads or min(4, os.cpu_count() or 1)
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        self._ocr = RapidOCR(intra_op_num_threads=n, inter_op_num_threads=1, print_verbose=False)
        self._lock = threading.Lock()

    def lines(self, image: Any) -> list[Line]:
        """Text lines of an image (PIL image or RGB array) in reading order, upright."""
        array = _rgb_array(image)
        found = self._read(array)
        if _mostly_vertical(found):
            # a page scanned sideways: its lines come out as tall boxes; read it turned both ways,
            # without the direction classifier (which would turn each upside-down line back and
            # make both readings look right, in opposite line orders), and keep the better one
            tries = [self._read(np.ascontiguousarray(np.rot90(array, k)), classify=False) for k in (1, 3)]
            best = max(tries, key=_weight)
            if _weight(best) > _weight(found):
                found = best
        return reading_order(found)

    def _read(self, array: np.ndarray, classify: bool = True) -> list[Line]:
        with self._lock:
            result, _ = self._ocr(array[:, :, ::-1].copy(), use_cls=classify)  # rapidocr takes OpenCV's BGR
        out: list[Line] = []
        for box, text, score in result or []:
            if not str(text).strip() or float(score) < MIN_SCORE:
                continue
            xs = [float(p[0]) for p in box]
            ys = [float(p[1]) for p in box]
            out.append(Line(str(text).strip(), float(score), min(xs), min(ys), max(xs), max(ys)))
        return out


def _rgb_array(image: Any) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image if image.ndim == 3 else np.stack([image] * 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def _weight(lines: list[Line]) -> float:
    return sum(len(ln.text) * ln.score for ln in lines)


def _mostly_vertical(lines: list[Line]) -> bool:
    """True when most detected text boxes are much taller than wide (the page lies on its side)."""
    long = [ln for ln in lines if max(ln.right - ln.left, ln.height) > 40]
    if len(long) < 2:
        return not lines
    tall = sum(1 for ln in long if ln.height > 1.5 * (ln.right - ln.left))
    return tall > len(long) / 2


def reading_order(lines: list[Line]) -> list[Line]:
    """Top to bottom, and left to right within a visual row (boxes whose middles are close)."""
    ordered = sorted(lines, key=lambda ln: (ln.middle, ln.left))
    rows = _rows(ordered)
    return [ln for row in rows for ln in sorted(row, key=lambda ln: ln.left)]


def _rows(lines: list[Line]) -> list[list[Line]]:
    rows: list[list[Line]] = []
    for ln in sorted(lines, key=lambda x: x.middle):
        if rows:
            last = rows[-1]
            height = statistics.median(x.height for x in last)
            if abs(ln.middle - statistics.median(x.middle for x in last)) < 0.5 * max(height, ln.height):
                last.append(ln)
                continue
        rows.append([ln])
    return [sorted(r, key=lambda x: x.left) for r in rows]


def lines_to_blocks(lines: list[Line], page: int | None) -> list[Block]:
    """Paragraphs and tables from OCR lines: consecutive rows of two or more cells make a table."""
    blocks: list[Block] = []
    rows = _rows(lines)
    if not rows:
        return blocks
    heights = [ln.height for ln in lines]
    line_height = statistics.median(heights)
    # the usual space between rows of this page: a clearly larger one ends a paragraph
    gaps = [min(x.top for x in b) - max(x.bottom for x in a) for a, b in zip(rows, rows[1:], strict=False)]
    usual_gap = statistics.median(gaps) if gaps else line_height
    para: list[str] = []
    table: list[list[str]] = []
    prev_bottom: float | None = None

    def flush_para() -> None:
        if para:
            blocks.append(Block("text", _join(para), page=page))
            para.clear()

    def flush_table() -> None:
        if len(table) >= 2:
            width = max(len(r) for r in table)
            blocks.append(Block("table", rows=[r + [""] * (width - len(r)) for r in table], page=page))
        elif table:
            para.append(" ".join(table[0]))
        table.clear()

    for row in rows:
        cells = _cells(row, line_height)
        top = min(ln.top for ln in row)
        gap = None if prev_bottom is None else top - prev_bottom
        prev_bottom = max(ln.bottom for ln in row)
        if len(cells) >= 2:
            flush_para()
            table.append(cells)
            continue
        flush_table()
        if gap is not None and gap > max(1.6 * usual_gap, usual_gap + 0.5 * line_height):
            flush_para()
        para.append(cells[0])
        if cells[0].endswith(("。", "！", "？", "：")) and len(cells[0]) < 12:
            flush_para()
    flush_table()
    flush_para()
    return blocks


def _cells(row: list[Line], line_height: float) -> list[str]:
    """The row's text, split into cells where boxes are far apart (more than two character widths)."""
    cells: list[str] = []
    prev: Line | None = None
    for ln in row:
        if prev is not None and ln.left - prev.right < 2.0 * line_height:
            cells[-1] += ("" if _cjk_edge(cells[-1], ln.text) else " ") + ln.text
        else:
            cells.append(ln.text)
        prev = ln
    return cells


def _cjk_edge(a: str, b: str) -> bool:
    return bool(a) and bool(b) and (ord(a[-1]) > 0x2E80 or ord(b[0]) > 0x2E80)


def _join(parts: list[str]) -> str:
    out = ""
    for p in parts:
        out += ("" if not out or _cjk_edge(out, p) else " ") + p
    return out
