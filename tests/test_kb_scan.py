"""Scanned documents through OCR (rapidocr-onnxruntime, the PP-OCR models in its wheel), on pages
rendered here from known Chinese text: images, a rotated page, a table, a scanned PDF and a page
with both a text layer and a scanned region."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.kb_pages import NOTICE, TABLE, cer, image_bytes, scanned_pdf, table_page, text_page
from tests.test_kb import make_service

from bendi.config import Settings
from bendi.kb.loaders import LoadOptions, load_document
from bendi.kb.ocr import OcrEngine
from bendi.kb.service import KnowledgeBaseService

MAX_CER = 0.03


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return OcrEngine()


@pytest.fixture
def kb(settings: Settings, engine: OcrEngine) -> Iterator[KnowledgeBaseService]:
    service = make_service(settings)
    service._ocr = engine  # one engine for the module: loading the models takes seconds
    yield service
    service.close()


def text_of(doc: object) -> str:
    blocks = doc.blocks  # type: ignore[attr-defined]
    return "".join(b.text or "".join("".join(r) for r in b.rows) for b in blocks)


def test_png_jpg_and_rotated_page_read_within_3_percent(engine: OcrEngine, tmp_path: Path) -> None:
    page = text_page(NOTICE)
    options = LoadOptions(ocr=lambda: engine)
    for name, image in [("notice.png", page), ("notice.jpg", page), ("sideways.png", page.rotate(90, expand=True))]:
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        doc = load_document(tmp_path / name, image_bytes(image, fmt), options)
        assert doc.format == "image" and "read by OCR" in doc.warnings
        error = cer("".join(NOTICE), text_of(doc))
        assert error <= MAX_CER, (name, error, text_of(doc))


def test_table_keeps_rows_and_cells(engine: OcrEngine, tmp_path: Path) -> None:
    doc = load_document(tmp_path / "form.png", image_bytes(table_page(TABLE), "PNG"), LoadOptions(ocr=lambda: engine))
    tables = [b for b in doc.blocks if b.kind == "table"]
    assert len(tables) == 1, doc.blocks
    rows = tables[0].rows
    assert len(rows) == len(TABLE) and all(len(r) == 3 for r in rows), rows
    assert cer("".join("".join(r) for r in TABLE), "".join("".join(r) for r in rows)) <= MAX_CER


def test_multipage_tiff_is_paged(engine: OcrEngine, tmp_path: Path) -> None:
    import io

    first, second = text_page(NOTICE[:3]), text_page(NOTICE[3:])
    out = io.BytesIO()
    first.save(out, format="TIFF", save_all=True, append_images=[second])
    doc = load_document(tmp_path / "scan.tiff", out.getvalue(), LoadOptions(ocr=lambda: engine))
    assert doc.pages == 2
    assert {b.page for b in doc.blocks} == {1, 2}
    assert "瓦斯检查员" in "".join(b.text for b in doc.blocks if b.page == 2)


def test_scanned_pdf_and_mixed_page_per_page(engine: OcrEngine, tmp_path: Path) -> None:
    path = tmp_path / "notice.pdf"
    scanned_pdf(path, [text_page(NOTICE)], text_page="Page 2 has a text layer. Inspection record follows.")
    seen: list[tuple[int, int]] = []
    doc = load_document(path, None, LoadOptions(ocr=lambda: engine, progress=lambda d, t: seen.append((d, t))))
    assert doc.pages == 2 and seen[-1] == (2, 2)
    page1 = "".join(b.text for b in doc.blocks if b.page == 1)
    page2 = "".join(b.text for b in doc.blocks if b.page == 2)
    assert cer("".join(NOTICE), page1) <= MAX_CER
    assert "text layer" in page2 and "瓦斯浓度" in page2  # the text layer and the scanned region
    assert any("read by OCR" in w for w in doc.warnings)
    # without OCR the scanned page is reported, not silently lost
    plain = load_document(path, None, LoadOptions())
    assert any("no text layer: 1" in w for w in plain.warnings)


def test_scanned_notice_is_searchable_with_its_page(kb: KnowledgeBaseService, tmp_path: Path) -> None:
    path = tmp_path / "通知.pdf"
    scanned_pdf(path, [text_page(["封面"]), text_page(NOTICE)])
    kb.create("s")
    result = kb.add_file("s", path)
    assert result.status == "added", result.error
    hit = kb.search("s", "瓦斯浓度达到多少时必须停止作业？").hits[0]
    assert (hit.document, hit.page) == ("通知.pdf", 2)
    assert kb.index("s").check() == []
