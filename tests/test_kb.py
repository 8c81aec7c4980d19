"""Knowledge base: loaders on real files of every format, chunking, index safety, retrieval, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bendi.cli.main import cli
from bendi.config import Settings
from bendi.errors import DocumentError, KnowledgeBaseNotFound
from bendi.kb.answer import citations
from bendi.kb.chunking import MAX_CHARS, chunk_blocks, split_sentences
from bendi.kb.loaders import Block, load_document
from bendi.kb.service import KnowledgeBaseService
from bendi.services import Services

FIXTURES = Path(__file__).parent / "fixtures" / "kb"

ZH_SAFETY = (
    "# 井下安全规程\n\n## 第一章 个人防护\n\n"
    "入井人员必须佩戴安全帽、矿灯和自救器。严禁携带烟草和点火物品入井。\n\n"
    "## 第二章 瓦斯管理\n\n"
    "工作面瓦斯浓度达到1.5%时，必须停止工作，撤出人员，切断电源。瓦斯检查员每班至少检查两次。\n\n"
    "| 设备 | 检查周期 |\n| --- | --- |\n| 瓦斯传感器 | 每班 |\n| 自救器 | 每月 |\n"
)


def make_service(settings: Settings) -> KnowledgeBaseService:
    return Services.build(settings).kb


@pytest.fixture
def kb(settings: Settings) -> KnowledgeBaseService:
    service = make_service(settings)
    yield service
    service.close()


def write_pdf(path: Path, pages: list[str], blank_pages: tuple[int, ...] = ()) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    for i, text in enumerate(pages, start=1):
        pdf.add_page()
        if i in blank_pages:
            pdf.rect(20, 20, 100, 100)  # a drawing, no text: like a scanned page
            continue
        pdf.set_font("Helvetica", size=11)
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))


def write_docx(path: Path) -> None:
    import docx

    d = docx.Document()
    d.add_heading("皮带输送机检修规程", level=1)
    d.add_paragraph("检修前必须停机并闭锁开关，悬挂“有人工作，禁止送电”警示牌。")
    d.add_heading("点检标准", level=2)
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "项目", "标准"
    for a, b in [("轴承温度", "不超过75℃"), ("托辊", "转动灵活无异响")]:
        cells = table.add_row().cells
        cells[0].text, cells[1].text = a, b
    d.save(str(path))


def write_xlsx(path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "spare parts"
    sheet.append(["part", "stock", "supplier"])
    sheet.append(["scraper blade", 12, "Acme Mining"])
    sheet.append(["idler roller", 40, "Acme Mining"])
    book.save(str(path))


# -- embeddings ---------------------------------------------------------------------------------


def test_minilm_matches_sentence_transformers_reference(kb: KnowledgeBaseService) -> None:
    ref = json.loads((FIXTURES / "minilm_reference.json").read_text(encoding="utf-8"))
    vectors = kb.minilm_embedder().embed(ref["sentences"])
    cosines = (vectors * np.asarray(ref["embeddings"], np.float32)).sum(axis=1)
    assert vectors.shape == (len(ref["sentences"]), 384)
    assert cosines.min() >= 0.99, cosines


# -- loaders ----------------------------------------------------------------------------------


def test_txt_in_gbk_and_utf8(tmp_path: Path) -> None:
    text = "第一章 总则\n\n为了保障煤矿安全生产，制定本规程。井下作业人员必须遵守本规程。\n"
    (tmp_path / "gbk.txt").write_bytes(text.encode("gbk"))
    (tmp_path / "utf8.txt").write_bytes(text.encode("utf-8"))
    for name in ("gbk.txt", "utf8.txt"):
        doc = load_document(tmp_path / name)
        assert doc.blocks[0].kind == "heading" and doc.blocks[0].text == "第一章 总则"
        assert "保障煤矿安全生产" in doc.blocks[1].text


def test_markdown_headings_and_table(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(ZH_SAFETY, encoding="utf-8")
    doc = load_document(tmp_path / "a.md")
    assert doc.title == "井下安全规程"
    chunks = chunk_blocks(doc.blocks)
    sections = [c.section for c in chunks]
    assert "井下安全规程 > 第一章 个人防护" in sections
    table = next(c for c in chunks if c.kind == "table")
    assert table.text.splitlines()[0] == "设备 | 检查周期"
    assert "瓦斯传感器 | 每班" in table.text


def test_html(tmp_path: Path) -> None:
    html = ("<html><head><meta charset='gbk'><title>通风规定</title><script>var x=1;</script></head><body>"
            "<h1>局部通风</h1><p>局部通风机必须专人管理，严禁无计划停风。</p>"
            "<table><tr><th>项目</th><th>要求</th></tr><tr><td>风量</td><td>满足需要</td></tr></table></body></html>")
    (tmp_path / "a.html").write_bytes(html.encode("gbk"))
    doc = load_document(tmp_path / "a.html")
    assert doc.title == "通风规定"
    kinds = [(b.kind, b.text or b.rows[0][0]) for b in doc.blocks]
    assert ("heading", "局部通风") in kinds and ("table", "项目") in kinds
    assert all("var x" not in b.text for b in doc.blocks)


def test_pdf_pages_and_missing_text_layer(tmp_path: Path) -> None:
    write_pdf(tmp_path / "m.pdf", ["Page one talks about the hydraulic pump.",
                                   "", "Page three: replace the scraper blade when worn."], blank_pages=(2,))
    doc = load_document(tmp_path / "m.pdf")
    assert doc.pages == 3
    assert doc.warnings == ["1 of 3 pages have no text layer: 2"]
    pages = {b.page for b in doc.blocks}
    assert pages == {1, 3}
    write_pdf(tmp_path / "scan.pdf", ["", ""], blank_pages=(1, 2))
    with pytest.raises(DocumentError, match="no text layer"):
        load_document(tmp_path / "scan.pdf")


def test_docx_with_table(tmp_path: Path) -> None:
    write_docx(tmp_path / "a.docx")
    doc = load_document(tmp_path / "a.docx")
    chunks = chunk_blocks(doc.blocks)
    table = next(c for c in chunks if c.kind == "table")
    assert table.text.startswith("项目 | 标准\n") and "轴承温度 | 不超过75℃" in table.text
    assert table.section == "皮带输送机检修规程 > 点检标准"


def test_csv_and_xlsx(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes("设备,数量\n自救器,30\n矿灯,45\n".encode("gb18030"))
    doc = load_document(tmp_path / "a.csv")
    assert doc.blocks[0].rows == [["设备", "数量"], ["自救器", "30"], ["矿灯", "45"]]
    write_xlsx(tmp_path / "b.xlsx")
    chunks = chunk_blocks(load_document(tmp_path / "b.xlsx").blocks)
    assert chunks[0].section == "spare parts"
    assert chunks[0].text.startswith("part | stock | supplier\nscraper blade | 12 | Acme Mining")


def test_corrupt_and_unsupported_files(tmp_path: Path) -> None:
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    with pytest.raises(DocumentError, match="bad.pdf"):
        load_document(tmp_path / "bad.pdf")
    (tmp_path / "x.exe").write_bytes(b"MZ")
    with pytest.raises(DocumentError, match="unsupported file type"):
        load_document(tmp_path / "x.exe")


# -- chunking ---------------------------------------------------------------------------------


def test_sentences_split_on_chinese_and_english_ends() -> None:
    parts = split_sentences("必须佩戴安全帽。瓦斯超限怎么办？立即撤离！The pump runs at 3.5 MPa. Check it; then go.")
    assert parts == ["必须佩戴安全帽。", "瓦斯超限怎么办？", "立即撤离！", "The pump runs at 3.5 MPa. ",
                     "Check it; ", "then go."]


def test_chunks_end_at_sentence_ends_with_overlap() -> None:
    sentences = [f"第{i}条规定要求作业人员在第{i}号工作面认真检查支护和通风情况。" for i in range(1, 40)]
    chunks = chunk_blocks([Block("heading", "规程", level=1), Block("text", "".join(sentences))])
    assert len(chunks) > 3
    for c in chunks:
        assert len(c.text) <= MAX_CHARS
        assert c.text.endswith("。")  # never cut inside a sentence
        assert c.text.startswith("第")
        assert c.section == "规程"
    for a, b in zip(chunks, chunks[1:], strict=False):
        first_of_b = split_sentences(b.text)[0]
        assert first_of_b in a.text  # the overlap repeats the previous chunk's last sentence
    joined = "".join(chunks[0].text for _ in [0])
    assert sentences[0] in joined


def test_heading_starts_a_new_chunk_and_long_sentence_is_split() -> None:
    long = "，".join(["检查项目包括通风设施"] * 80) + "。"
    chunks = chunk_blocks([Block("heading", "A", level=1), Block("text", "短句。"),
                           Block("heading", "B", level=1), Block("text", long)])
    assert chunks[0].text == "短句。" and chunks[0].section == "A"
    assert all(c.section == "B" and len(c.text) <= MAX_CHARS for c in chunks[1:])
    assert len(chunks) > 2


# -- ingest and index ---------------------------------------------------------------------------


def test_add_search_citations_map_to_document_and_page(kb: KnowledgeBaseService, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "safety.md").write_text(ZH_SAFETY, encoding="utf-8")
    write_pdf(docs / "manual.pdf", [
        "Introduction. The BX-200 conveyor moves coal from the face to the shaft.",
        "Maintenance. Lubricate the drive pulley bearings every 500 operating hours with lithium grease.",
        "Troubleshooting. If the belt slips, check the take-up tension and clean the drive pulley.",
    ])
    kb.create("t")
    results = kb.add_paths("t", [docs])
    assert sorted((r.name, r.status) for r in results) == [("manual.pdf", "added"), ("safety.md", "added")]
    assert kb.embed_pending("t") == kb.info("t")["chunks"]

    hit = kb.search("t", "How often should the drive pulley bearings be lubricated?").hits[0]
    assert (hit.document, hit.page) == ("manual.pdf", 2)
    assert hit.relevant and hit.vector is not None and hit.lexical_rank == 1

    zh = kb.search("t", "瓦斯浓度达到多少时必须停止工作？").hits
    assert zh[0].document == "safety.md" and zh[0].section.endswith("第二章 瓦斯管理")
    assert "1.5%" in zh[0].text and zh[0].vector is not None  # multilingual-e5 reads Chinese

    # shares 瓦斯 with the handbook, but its subject is absent: below the threshold
    assert kb.search("t", "梅西在哪一年获得世界杯冠军和瓦斯奖？").hits == []
    marked = kb.search("t", "梅西在哪一年获得世界杯冠军和瓦斯奖？", include_all=True).hits
    assert marked and not any(h.relevant for h in marked)
    assert citations("See [2] and [1, 2]; not [7].", 2) == [2, 1]
    assert kb.index("t").check() == []


def test_unchanged_is_noop_and_changed_replaces(kb: KnowledgeBaseService, tmp_path: Path) -> None:
    path = tmp_path / "rules.md"
    path.write_text("# 规程\n\n入井必须佩戴自救器。\n", encoding="utf-8")
    kb.create("t")
    assert kb.add_file("t", path).status == "added"
    generation = kb.index("t").generation()
    assert kb.add_file("t", path).status == "unchanged"
    assert kb.index("t").generation() == generation  # nothing was written

    path.write_text("# 规程\n\n井下严禁吸烟。\n\n局部通风机必须专人管理。\n", encoding="utf-8")
    assert kb.add_file("t", path).status == "updated"
    assert kb.search("t", "佩戴自救器", include_all=True).hits == []
    assert kb.search("t", "吸烟").hits[0].document == "rules.md"
    assert [d.name for d in kb.index("t").documents()] == ["rules.md"]
    assert kb.index("t").check() == []


def test_failed_file_leaves_nothing_and_others_go_in(kb: KnowledgeBaseService, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\n第一份文件的内容。\n", encoding="utf-8")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not a zip at all")
    (tmp_path / "c.txt").write_text("Third file about ventilation fans.\n", encoding="utf-8")
    kb.create("t")
    results = {r.name: r for r in kb.add_paths("t", [tmp_path])}
    assert results["a.md"].status == "added" and results["c.txt"].status == "added"
    assert results["broken.docx"].status == "failed" and "broken.docx" in (results["broken.docx"].error or "")
    listing = kb.documents("t")
    assert [d["name"] for d in listing["documents"]] == ["a.md", "c.txt"]
    assert [f["name"] for f in listing["failures"]] == ["broken.docx"]
    assert kb.index("t").check() == []


def test_remove_document_clears_every_index(kb: KnowledgeBaseService, tmp_path: Path) -> None:
    (tmp_path / "en.txt").write_text("Replace the scraper blade when it is worn to less than 10 mm.\n")
    (tmp_path / "zh.md").write_text(ZH_SAFETY, encoding="utf-8")
    kb.create("t")
    kb.add_paths("t", [tmp_path])
    kb.embed_pending("t")
    index = kb.index("t")
    assert kb.search("t", "scraper blade worn").hits
    assert index.vector_matrix()[1].shape[0] >= 1
    kb.remove_document("t", "en.txt")
    # the vector leg still offers the Chinese document's chunks (e5 reads both languages); none of
    # the removed document's
    assert all(h.document != "en.txt" for h in kb.search("t", "scraper blade worn", include_all=True).hits)
    assert index.vector_matrix()[1].shape[0] == index.n_chunks()  # only the other document's
    assert index.doc_freqs(["scraper"]) == {"scraper": 0}
    assert kb.search("t", "瓦斯浓度").hits  # the other document is untouched
    assert index.check() == []
    with pytest.raises(KnowledgeBaseNotFound):
        kb.search("nope", "x")


_INGEST_LOOP = """
import sys
from pathlib import Path
from bendi.config import Settings
from bendi.services import Services
kb = Services.build(Settings.from_env()).kb
src = Path(sys.argv[1])
i = 0
while True:
    i += 1
    (src / f"d{i}.md").write_text("# 文件%d\\n\\n" % i + "井下作业必须佩戴安全帽和自救器。" * 200 + "\\n")
    r = kb.add_file("t", src / f"d{i}.md")
    print(r.status, flush=True)
"""


def test_sigkill_mid_ingest_leaves_consistent_database(settings: Settings, tmp_path: Path) -> None:
    kb = make_service(settings)
    kb.create("t")
    kb.close()
    src = tmp_path / "src"
    src.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _INGEST_LOOP, str(src)], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ))
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    added = 0
    while added < 5 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        added += line.strip() == "added"
    proc.send_signal(signal.SIGKILL)  # while it is in the middle of the next document
    proc.wait(timeout=30)
    assert added >= 5, "the ingest loop did not get going"

    kb = make_service(settings)
    try:
        index = kb.index("t")
        assert index.check() == []
        docs = index.documents()
        assert len(docs) >= 5
        for d in docs:
            assert len(index.document_chunks(d.name)) == d.n_chunks > 0
        assert kb.search("t", "佩戴安全帽").hits
        # and the knowledge base still takes documents
        (src / "after.md").write_text("# 之后\n\n崩溃之后仍可添加文件。\n", encoding="utf-8")
        assert kb.add_file("t", src / "after.md").status == "added"
        assert index.check() == []
    finally:
        kb.close()


# -- CLI --------------------------------------------------------------------------------------


def test_cli_end_to_end(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "safety.md").write_text(ZH_SAFETY, encoding="utf-8")
    write_xlsx(docs / "parts.xlsx")
    (docs / "bad.pdf").write_bytes(b"garbage")
    runner = CliRunner()
    assert runner.invoke(cli, ["kb", "create", "s"]).exit_code == 0
    result = runner.invoke(cli, ["kb", "add", "s", str(docs)])
    assert result.exit_code == 1  # one file failed ...
    assert "failed" in result.output and "bad.pdf" in result.output
    assert "2 added" in result.output  # ... the others went in
    again = runner.invoke(cli, ["kb", "add", "s", str(docs / "safety.md")])
    assert again.exit_code == 0 and "1 unchanged" in again.output

    ls = runner.invoke(cli, ["kb", "ls", "--json"])
    assert json.loads(ls.output)[0]["documents"] == 2
    docs_out = runner.invoke(cli, ["kb", "docs", "s"])
    assert "safety.md" in docs_out.output and "failed:" in docs_out.output

    found = runner.invoke(cli, ["kb", "search", "s", "瓦斯浓度达到多少必须停止工作？", "--json"])
    data = json.loads(found.output)
    assert data["found"] and data["results"][0]["document"] == "safety.md"
    assert {"fused", "lexical", "bm25", "vector", "page", "section"} <= set(data["results"][0])

    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"id": "a", "question": "scraper blade stock"}) + "\n"
                       + json.dumps({"id": "b", "question": "梅西获得世界杯冠军"}) + "\n", encoding="utf-8")
    batch = runner.invoke(cli, ["kb", "search", "s", "--queries", str(queries), "--json"])
    lines = [json.loads(x) for x in batch.output.splitlines()]
    assert [(x["id"], x["found"]) for x in lines] == [("a", True), ("b", False)]
    assert lines[0]["results"][0]["document"] == "parts.xlsx"

    nf = runner.invoke(cli, ["kb", "ask", "s", "梅西在哪一年获得世界杯冠军？", "--model", "no-such-model"])
    assert nf.exit_code == 0 and "知识库中没有找到相关内容" in nf.output  # no model was loaded

    assert runner.invoke(cli, ["kb", "rm-doc", "s", "parts.xlsx"]).exit_code == 0
    gone = runner.invoke(cli, ["kb", "search", "s", "scraper blade stock"])
    assert "not found" in gone.output
    missing = runner.invoke(cli, ["kb", "search", "nope", "x"])
    assert missing.exit_code == 1 and "not found" in missing.output and "Traceback" not in missing.output
    assert runner.invoke(cli, ["kb", "rm", "s", "-y"]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["kb", "ls", "--json"]).output) == []
