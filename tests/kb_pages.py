"""Scanned pages for the OCR tests, rendered here from known Chinese text with a CJK font from
Debian (fonts-wqy-microhei, installed by `make test`), and the character error rate."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")

NOTICE = [
    "关于加强井下瓦斯管理的通知",
    "各区队、各科室：",
    "近期部分采掘工作面瓦斯浓度波动较大，为确保安全生产，现将有关要求通知如下。",
    "一、瓦斯检查员每班检查不少于两次，并如实填写检查记录。",
    "二、工作面瓦斯浓度达到百分之一点五时，必须停止作业，撤出人员，切断电源。",
    "三、局部通风机必须专人管理，严禁随意停开。",
    "安全科，二〇二四年三月五日",
]

TABLE = [
    ["设备名称", "检查周期", "责任人"],
    ["瓦斯传感器", "每班一次", "王建国"],
    ["自救器", "每月一次", "李明"],
    ["局部通风机", "每日两次", "张伟"],
]


def font(size: int = 34) -> ImageFont.FreeTypeFont:
    if not FONT.is_file():
        raise RuntimeError(f"{FONT} is missing: apt-get install fonts-wqy-microhei (make test does it)")
    return ImageFont.truetype(str(FONT), size)


def text_page(lines: list[str], width: int = 1654, height: int = 1200) -> Image.Image:
    """A white page (A4 width at 200 dpi) with the lines in black, as a scanner would give it."""
    page = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(page)
    f = font()
    y = 100
    for line in lines:
        draw.text((120, y), line, fill="black", font=f)
        y += 64
    return page


def table_page(rows: list[list[str]]) -> Image.Image:
    """A ruled table, three columns, as on an inspection form."""
    page = Image.new("RGB", (1654, 700), "white")
    draw = ImageDraw.Draw(page)
    f = font()
    x0, y0, widths, height = 120, 120, [420, 380, 360], 80
    for r, row in enumerate(rows):
        x = x0
        for c, cell in enumerate(row):
            draw.rectangle([x, y0 + r * height, x + widths[c], y0 + (r + 1) * height], outline="black", width=2)
            draw.text((x + 24, y0 + r * height + 20), cell, fill="black", font=f)
            x += widths[c]
    return page


def image_bytes(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def scanned_pdf(path: Path, pages: list[Image.Image], text_page: str | None = None) -> None:
    """A PDF of page images (no text layer); with `text_page`, one more page that has a text layer
    and a scanned image pasted below it (a mixed page)."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=(595, 842))
    for image in pages:
        pdf.add_page()
        pdf.image(image, x=0, y=0, w=595)
    if text_page is not None:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 16, text_page)
        pdf.image(pages[0], x=0, y=300, w=595)
    pdf.output(str(path))


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate: edit distance over the reference length, whitespace ignored."""
    ref = "".join(reference.split())
    hyp = "".join(hypothesis.split())
    previous = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        current = [i]
        for j, b in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] / max(1, len(ref))
