"""Scanned documents: images, PDF pages without a text layer, and scanned regions of PDF pages that
have one, read by OCR (ocr.py). Decided page by page:

- no text layer (or only a few characters): the whole page is rendered and read;
- a text layer and images covering a tenth of the page or more (a stamped notice, a pasted scan
  of a form): the images are read and what they say that the text layer does not is added;
- a text layer and no large image: the text layer alone (OCR would only repeat it, slowly).

Pages are rendered with pdfium (pypdfium2) at 200 dpi, which the PP-OCR models read well.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from bendi.errors import DocumentError
from bendi.kb.loaders import Block, LoadedDocument, LoadOptions, ranges
from bendi.kb.ocr import OcrEngine, lines_to_blocks

RENDER_DPI = 200
#: a page with fewer characters than this in its text layer counts as scanned
MIN_TEXT_CHARS = 20
#: images covering at least this share of a page with text are read too
MIN_IMAGE_AREA = 0.10


def load_image(data: bytes, path: Path, options: LoadOptions) -> LoadedDocument:
    """An image file (every frame of a multi-page TIFF is a page) read by OCR."""
    from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

    engine = options.ocr() if options.ocr is not None else None
    if engine is None:
        raise DocumentError(f"{path.name}: an image needs OCR, which is not installed"
                            " (pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    try:
        image = Image.open(io.BytesIO(data))
        frames = [ImageOps.exif_transpose(f.copy()) for f in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError) as exc:
        raise DocumentError(f"{path.name}: not a readable image ({exc})") from None
    blocks: list[Block] = []
    empty: list[int] = []
    paged = len(frames) > 1
    for number, frame in enumerate(frames, start=1):
        page = number if paged else None
        found = lines_to_blocks(engine.lines(frame), page)
        if not found:
            empty.append(number)
        blocks.extend(found)
        options.report(number, len(frames))
    doc = LoadedDocument("image", path.stem, blocks, pages=len(frames) if paged else None)
    doc.warnings.append("read by OCR")
    if empty and paged:
        doc.warnings.append(f"{len(empty)} of {len(frames)} pages have no text, even by OCR: {ranges(empty)}")
    return doc


def ocr_pdf_pages(data: bytes, texts: list[str], engine: OcrEngine, options: LoadOptions) -> dict[int, list[Block]]:
    """Blocks read by OCR for each page that needs it (see the module docstring), by page number."""
    import pypdfium2 as pdfium

    out: dict[int, list[Block]] = {}
    pdf = pdfium.PdfDocument(data)
    try:
        total = len(pdf)
        for i in range(total):
            number = i + 1
            text = texts[i] if i < len(texts) else ""
            page = pdf[i]
            try:
                if len("".join(text.split())) < MIN_TEXT_CHARS:
                    out[number] = _read_page(page, engine, number, known="")
                else:
                    out[number] = _read_images(page, engine, number, text)
            finally:
                page.close()
            options.report(number, total)
    finally:
        pdf.close()
    return out


def _render(page: Any) -> Any:
    return page.render(scale=RENDER_DPI / 72).to_pil()


def _read_page(page: Any, engine: OcrEngine, number: int, known: str) -> list[Block]:
    blocks = lines_to_blocks(engine.lines(_render(page)), number)
    return _without_known(blocks, known)


def _read_images(page: Any, engine: OcrEngine, number: int, text: str) -> list[Block]:
    """OCR of the large images on a page that has a text layer; only what the text layer lacks."""
    import pypdfium2.raw as pdfium_c

    width, height = page.get_size()
    boxes = []
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=2):
        bounds = obj.get_bounds if hasattr(obj, "get_bounds") else obj.get_pos  # renamed in pypdfium2 5
        left, bottom, right, top = bounds()
        if (right - left) * (top - bottom) >= MIN_IMAGE_AREA * width * height:
            boxes.append((max(0.0, left), max(0.0, bottom), min(width, right), min(height, top)))
    if not boxes:
        return []
    if page.get_rotation():
        return _read_page(page, engine, number, known=text)  # image boxes are in unrotated space
    rendered = _render(page)
    scale = RENDER_DPI / 72
    blocks: list[Block] = []
    for left, bottom, right, top in boxes:
        # PDF space grows upwards from the bottom-left corner; the bitmap downwards from the top
        crop = rendered.crop((int(left * scale), int((height - top) * scale),
                              int(right * scale), int((height - bottom) * scale)))
        blocks.extend(lines_to_blocks(engine.lines(crop), number))
    return _without_known(blocks, text)


def _without_known(blocks: list[Block], known: str) -> list[Block]:
    """Drop OCR text blocks the page's text layer already has (a text layer over its own scan)."""
    if not known:
        return blocks
    flat = "".join(known.split())
    out = []
    for b in blocks:
        body = "".join((b.text or " ".join(" ".join(r) for r in b.rows)).split())
        if body and body in flat:
            continue
        out.append(b)
    return out
