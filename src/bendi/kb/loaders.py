"""Document loaders: a file becomes a list of blocks (headings, text, tables) with page anchors.

Formats: txt, md, html, pdf, docx (with tables), csv, xlsx, and images (jpg, png, tiff, bmp,
webp). PDF pages without a text layer, scanned regions of pages that have one, and images are
read by OCR (scanned.py) when the caller passes an OCR engine. Every failure is a DocumentError
with a reason a user can act on.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bendi.errors import DocumentError

SUFFIXES = {
    ".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".html": "html", ".htm": "html",
    ".pdf": "pdf", ".docx": "docx", ".csv": "csv", ".xlsx": "xlsx",
    ".jpg": "image", ".jpeg": "image", ".png": "image", ".tif": "image", ".tiff": "image",
    ".bmp": "image", ".webp": "image",
}


@dataclass
class Block:
    """One structural unit of a document."""

    kind: str  # "heading" | "text" | "table"
    text: str = ""
    level: int = 0  # heading level, 1 = top
    page: int | None = None  # 1-based page, for paged formats
    rows: list[list[str]] = field(default_factory=list)  # tables: first row is the header
    #: tables: each row's number in the file (spreadsheet row, CSV line), for citations
    row_numbers: list[int] = field(default_factory=list)


@dataclass
class LoadedDocument:
    format: str
    title: str
    blocks: list[Block]
    pages: int | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class LoadOptions:
    """What a loader may use beyond the bytes: an OCR engine (made on first use, None when OCR is
    not installed) and a progress callback for long files (pages done, pages in all)."""

    ocr: Callable[[], Any] | None = None
    progress: Callable[[int, int], None] | None = None

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


def format_of(path: Path) -> str | None:
    return SUFFIXES.get(path.suffix.lower())


def load_document(path: Path, data: bytes | None = None, options: LoadOptions | None = None) -> LoadedDocument:
    """Read `path` (or `data`, named by `path`) into blocks."""
    options = options or LoadOptions()
    fmt = format_of(path)
    if fmt is None:
        known = ", ".join(sorted(set(SUFFIXES.values())))
        raise DocumentError(f"{path.name}: unsupported file type {path.suffix or '(none)'!r} (supported: {known})")
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DocumentError(f"{path.name}: cannot read: {exc.strerror or exc}") from None
    loader = _LOADERS[fmt]
    try:
        doc = loader(data, path, options) if fmt in ("pdf", "image") else loader(data, path)
    except DocumentError:
        raise
    except Exception as exc:  # parsers raise anything on a damaged file
        raise DocumentError(f"{path.name}: not a readable {fmt} file ({type(exc).__name__}: {exc})") from None
    doc.blocks = [b for b in doc.blocks if b.text.strip() or b.rows]
    if not any(b.kind != "heading" for b in doc.blocks):
        if fmt == "pdf" and options.ocr is None:
            reason = "no text layer (scanned?); OCR is off"
        elif fmt in ("pdf", "image"):
            reason = "no text found, not even by OCR"
        else:
            reason = "no text"
        raise DocumentError(f"{path.name}: {reason}")
    return doc


# -- text decoding --------------------------------------------------------------------------------


def decode_text(data: bytes, name: str = "") -> str:
    """Bytes to text: BOMs, then UTF-8, then GB18030 (a superset of GBK/GB2312), then detection."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:4096]:
        raise DocumentError(f"{name}: looks like a binary file, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Chinese files that are not UTF-8 are nearly always GBK/GB18030; detectors often call short
    # GBK text Big5 or a Latin code page, so GB18030 is tried first when it decodes cleanly.
    try:
        text = data.decode("gb18030")
        if _mostly_cjk_or_ascii(text):
            return text
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise DocumentError(f"{name}: cannot detect the text encoding")
    return str(best)


def _mostly_cjk_or_ascii(text: str) -> bool:
    sample = text[:4000]
    ok = sum(1 for ch in sample if ch.isascii() or "\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef")
    return ok >= 0.95 * max(1, len(sample))


# -- plain text and markdown -----------------------------------------------------------------------

_CN_HEADING = re.compile(r"^\s*(第[一二三四五六七八九十百千零〇\d]+[编章节部分篇条]|[一二三四五六七八九十]+、)\s*\S")
_NUMBERED_HEADING = re.compile(r"^\s*(\d+(\.\d+){0,3})\.?\s+[^\s].{0,60}$")
_SENTENCE_END = re.compile(r"[。！？；.!?;:：，,]\s*$")


def _looks_like_heading(line: str) -> int:
    """Heading level for short title-like lines of plain text, 0 when it reads like prose."""
    s = line.strip()
    if not s or len(s) > 40 or _SENTENCE_END.search(s):
        return 0
    if _CN_HEADING.match(s):
        return 1 if re.match(r"^\s*第.+[编章部篇]", s) else 2
    m = _NUMBERED_HEADING.match(s)
    if m:
        return min(3, m.group(1).count(".") + 1)
    return 0


def _paragraph_blocks(text: str, page: int | None = None) -> list[Block]:
    """Blank-line separated paragraphs; short numbered/chapter lines become headings."""
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(Block("text", _join_lines(para), page=page))
            para.clear()

    for line in text.splitlines():
        if not line.strip():
            flush()
            continue
        level = _looks_like_heading(line)
        if level:
            flush()
            blocks.append(Block("heading", line.strip(), level=level, page=page))
        else:
            para.append(line.strip())
    flush()
    return blocks


def _join_lines(lines: list[str]) -> str:
    """Join wrapped lines: no space between CJK characters, one space between words."""
    out = ""
    for line in lines:
        if out and not (_is_cjk(out[-1]) or _is_cjk(line[0])):
            out += " "
        out += line
    return out


def _is_cjk(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef" or ch in "。，、；：？！"


def _load_txt(data: bytes, path: Path) -> LoadedDocument:
    text = decode_text(data, path.name)
    return LoadedDocument("txt", path.stem, _paragraph_blocks(text))


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_MD_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_MD_INLINE = [(re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"), (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),
              (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"), (re.compile(r"`([^`]+)`"), r"\1")]


def _md_inline(text: str) -> str:
    for pattern, repl in _MD_INLINE:
        text = pattern.sub(repl, text)
    return text


def _md_row(line: str) -> list[str]:
    return [_md_inline(c.strip()) for c in line.strip().strip("|").split("|")]


def _load_md(data: bytes, path: Path) -> LoadedDocument:
    text = decode_text(data, path.name)
    lines = text.splitlines()
    blocks: list[Block] = []
    para: list[str] = []
    title = ""
    i = 0
    in_code = False

    def flush() -> None:
        if para:
            blocks.append(Block("text", _join_lines([_md_inline(p) for p in para])))
            para.clear()

    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            in_code = not in_code
            i += 1
            continue
        if in_code:
            para.append(line)
            i += 1
            continue
        m = _MD_HEADING.match(line)
        if m:
            flush()
            heading = _md_inline(m.group(2))
            blocks.append(Block("heading", heading, level=len(m.group(1))))
            title = title or heading
            i += 1
            continue
        if "|" in line and i + 1 < len(lines) and _MD_TABLE_SEP.match(lines[i + 1]):
            flush()
            rows = [_md_row(line)]
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                rows.append(_md_row(lines[i]))
                i += 1
            blocks.append(Block("table", rows=rows))
            continue
        stripped = line.strip()
        if not stripped:
            flush()
        elif re.match(r"^([-*+]|\d+[.)])\s+", stripped):
            flush()  # list items are paragraphs of their own: they are usually separate rules
            para.append(stripped)
        else:
            para.append(stripped)
        i += 1
    flush()
    return LoadedDocument("md", title or path.stem, blocks)


# -- html --------------------------------------------------------------------------------------


def _load_html(data: bytes, path: Path) -> LoadedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")  # reads <meta charset>, falls back to detection
    for tag in soup(["script", "style", "noscript", "template", "nav", "footer"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    blocks: list[Block] = []
    root = soup.body or soup
    wanted = ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "table", "pre", "blockquote", "dd", "dt"]
    for el in root.find_all(wanted):
        nested = el.find_parent(["table", "li", "blockquote"]) is not None and el.name != "table"
        if nested and (el.name != "li" or el.find_parent("table") is not None):
            continue
        if el.name == "table":
            if el.find_parent("table") is not None:
                continue
            rows = []
            for tr in el.find_all("tr"):
                cells = [c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])]
                if any(cells):
                    rows.append(cells)
            if rows:
                blocks.append(Block("table", rows=rows))
        elif el.name[0] == "h" and el.name[1:].isdigit():
            blocks.append(Block("heading", el.get_text(" ", strip=True), level=int(el.name[1])))
        else:
            if el.find(["p", "li", "table"]) is not None:
                continue  # a container: its children come on their own
            blocks.append(Block("text", el.get_text(" ", strip=True)))
    if not blocks:
        blocks = _paragraph_blocks(root.get_text("\n"))
    first_heading = next((b.text for b in blocks if b.kind == "heading"), "")
    return LoadedDocument("html", title or first_heading or path.stem, blocks)


# -- pdf ---------------------------------------------------------------------------------------


def _load_pdf(data: bytes, path: Path, options: LoadOptions) -> LoadedDocument:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            reader.decrypt("")
        except Exception:
            raise DocumentError(f"{path.name}: the PDF is encrypted") from None
    outline = _pdf_outline(reader)
    texts = [(page.extract_text() or "").strip() for page in reader.pages]
    repeated = _running_lines(texts)
    blocks: list[Block] = []
    empty: list[int] = []
    n = len(texts)
    scanned: dict[int, list[Block]] = {}
    ocr_pages: list[int] = []
    engine = options.ocr() if options.ocr is not None else None
    if engine is not None:
        from bendi.kb.scanned import ocr_pdf_pages

        scanned = ocr_pdf_pages(data, texts, engine, options)
        ocr_pages = sorted(p for p, b in scanned.items() if b)
    for number, text in enumerate(texts, start=1):
        if not text:
            if scanned.get(number):
                blocks.extend(scanned[number])
            else:
                empty.append(number)
            continue
        headings = dict(outline.get(number, []))
        lines = [ln for ln in text.splitlines() if _digits_masked(ln.strip()) not in repeated]
        in_text = {ln.strip() for ln in lines}
        for heading, level in headings.items():
            if heading not in in_text:  # a bookmark whose title is not printed on the page
                blocks.append(Block("heading", heading, level=level, page=number))
        blocks.extend(_pdf_page_blocks(lines, number, headings))
        blocks.extend(scanned.get(number, []))  # scanned regions of a page that also has text
    doc = LoadedDocument("pdf", _pdf_title(reader, path), blocks, pages=n)
    if ocr_pages:
        doc.warnings.append(f"read by OCR: {'page' if len(ocr_pages) == 1 else 'pages'} {_ranges(ocr_pages)}")
    if empty:
        what = "no text, even by OCR" if engine is not None else "no text layer"
        doc.warnings.append(f"{len(empty)} of {n} pages have {what}: {_ranges(empty)}")
    return doc


def _digits_masked(line: str) -> str:
    return re.sub(r"\d+", "#", line)


def _running_lines(pages: list[str]) -> set[str]:
    """Headers and footers: lines (page numbers masked) at the top or bottom of most pages."""
    if len(pages) < 3:
        return set()
    counts: dict[str, int] = {}
    for text in pages:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        for ln in set(lines[:2] + lines[-2:]):
            key = _digits_masked(ln)
            counts[key] = counts.get(key, 0) + 1
    return {k for k, c in counts.items() if c >= max(3, len(pages) // 2 + 1)}


def _pdf_page_blocks(lines: list[str], page: int, headings: dict[str, int]) -> list[Block]:
    # pdf text is one line per visual line: re-flow into paragraphs at blank lines and at short
    # lines that end a sentence.
    blocks: list[Block] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(Block("text", _join_lines(para), page=page))
            para.clear()

    for line in lines:
        s = line.strip()
        if not s:
            flush()
            continue
        level = headings.get(s) or _looks_like_heading(s)
        if level:
            flush()
            blocks.append(Block("heading", s, level=level, page=page))
            continue
        para.append(s)
        if re.search(r"[。！？.!?]$", s) and len(s) < 60:
            flush()
    flush()
    return blocks


def _pdf_title(reader: Any, path: Path) -> str:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:
        title = None
    return str(title).strip() if title else path.stem


def _pdf_outline(reader: Any) -> dict[int, list[tuple[str, int]]]:
    """Bookmarks as headings: page number -> [(title, level)]."""
    found: dict[int, list[tuple[str, int]]] = {}

    def walk(items: Any, level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item) + 1
            except Exception:
                continue
            found.setdefault(page, []).append((str(item.title), level))

    try:
        walk(reader.outline, 1)
    except Exception:
        return {}
    return found


def ranges(pages: list[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    return _ranges(pages)


def _ranges(pages: list[int]) -> str:
    parts: list[str] = []
    start = prev = pages[0]
    for p in pages[1:] + [-1]:
        if p == prev + 1:
            prev = p
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = p
    return ", ".join(parts)


# -- docx --------------------------------------------------------------------------------------


def _load_docx(data: bytes, path: Path) -> LoadedDocument:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(io.BytesIO(data))
    blocks: list[Block] = []
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            style = (item.style.name if item.style is not None else "") or ""
            level = _docx_heading_level(style)
            if level:
                blocks.append(Block("heading", text, level=level))
            else:
                blocks.append(Block("text", text))
        elif isinstance(item, Table):
            rows: list[list[str]] = []
            for row in item.rows:
                cells: list[str] = []
                for cell in row.cells:
                    value = cell.text.strip()
                    # merged cells repeat; keep one copy
                    if not cells or value != cells[-1] or not value:
                        cells.append(value)
                if any(cells):
                    rows.append(cells)
            if rows:
                blocks.append(Block("table", rows=rows))
    core_title = (document.core_properties.title or "").strip()
    first_heading = next((b.text for b in blocks if b.kind == "heading"), "")
    return LoadedDocument("docx", core_title or first_heading or path.stem, blocks)


def _docx_heading_level(style: str) -> int:
    m = re.match(r"^(Heading|标题)\s*(\d)$", style.strip())
    if m:
        return int(m.group(2))
    return 1 if style.strip() in ("Title", "标题") else 0


# -- tables ------------------------------------------------------------------------------------


def _load_csv(data: bytes, path: Path) -> LoadedDocument:
    text = decode_text(data, path.name)
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows: list[list[str]] = []
    numbers: list[int] = []
    for n, r in enumerate(csv.reader(io.StringIO(text), dialect), start=1):
        if any(c.strip() for c in r):
            rows.append([c.strip() for c in r])
            numbers.append(n)
    if not rows:
        raise DocumentError(f"{path.name}: no rows")
    return LoadedDocument("csv", path.stem, [Block("table", rows=rows, row_numbers=numbers)])


def _load_xlsx(data: bytes, path: Path) -> LoadedDocument:
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    blocks: list[Block] = []
    try:
        for sheet in book.worksheets:
            rows = []
            numbers = []
            for n, values in enumerate(sheet.iter_rows(values_only=True), start=sheet.min_row or 1):
                cells = ["" if v is None else str(v).strip() for v in values]
                while cells and not cells[-1]:
                    cells.pop()
                if any(cells):
                    rows.append(cells)
                    numbers.append(n)
            if rows:
                blocks.append(Block("heading", sheet.title, level=1))
                blocks.append(Block("table", rows=rows, row_numbers=numbers))
    finally:
        book.close()
    return LoadedDocument("xlsx", path.stem, blocks)


def _load_image(data: bytes, path: Path, options: LoadOptions) -> LoadedDocument:
    from bendi.kb.scanned import load_image

    return load_image(data, path, options)


_LOADERS: dict[str, Callable[..., LoadedDocument]] = {
    "txt": _load_txt, "md": _load_md, "html": _load_html, "pdf": _load_pdf,
    "docx": _load_docx, "csv": _load_csv, "xlsx": _load_xlsx, "image": _load_image,
}
