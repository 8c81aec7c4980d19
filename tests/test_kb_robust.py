"""Knowledge bases that keep working: vectors that follow in the background (and resume after a
restart), batch commands that go on past bad input, the approximate vector index kept consistent
with adds and removes, the Chinese embedder, and answers checked against their citations."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tests.test_kb import ZH_SAFETY, make_service, write_xlsx

from bendi.cli.main import cli
from bendi.config import Settings
from bendi.kb.answer import check_answer
from bendi.kb.chunking import Chunk
from bendi.kb.index import KnowledgeBaseIndex
from bendi.kb.retrieval import Hit
from bendi.kb.service import KnowledgeBaseService


@pytest.fixture
def kb(settings: Settings) -> Iterator[KnowledgeBaseService]:
    service = make_service(settings)
    yield service
    service.close()


def wait_for(predicate, seconds: float = 120.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# -- the Chinese embedder -----------------------------------------------------------------------


def test_e5_reads_chinese_and_matches_across_languages(kb: KnowledgeBaseService) -> None:
    e5 = kb.bundled_embedder()
    passages = e5.embed(["工作面瓦斯浓度达到1.5%时，必须停止工作，撤出人员，切断电源。",
                         "皮带输送机的托辊应每周检查一次，发现异响及时更换。",
                         "Lubricate the drive pulley bearings every 500 operating hours."])
    assert passages.shape == (3, 384)
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-3)
    zh = e5.embed_query(["瓦斯超限时应该怎么办？"])[0]
    en = e5.embed_query(["How often are the bearings greased?"])[0]
    zh_to_en = e5.embed_query(["轴承多久润滑一次？"])[0]
    assert int(np.argmax(passages @ zh)) == 0
    assert int(np.argmax(passages @ en)) == 2
    english = e5.embed(["The evacuation siren is tested every Monday at noon.",
                        "Lubricate the drive pulley bearings every 500 operating hours."])
    assert int(np.argmax(english @ zh_to_en)) == 1  # a Chinese question finds the English passage


# -- vectors in the background ------------------------------------------------------------------


def test_document_is_searchable_at_once_and_vectors_follow(kb: KnowledgeBaseService, tmp_path: Path) -> None:
    (tmp_path / "rules.md").write_text(ZH_SAFETY, encoding="utf-8")
    kb.create("t")
    assert kb.add_file("t", tmp_path / "rules.md").status == "added"
    first = kb.search("t", "瓦斯浓度达到多少时必须停止工作？")
    assert first.legs == ["lexical"] and first.hits and "1.5%" in first.hits[0].text
    assert kb.info("t")["vectors"]["pending"] > 0

    kb.resume_vectors()  # what the server does at start
    assert wait_for(lambda: kb.info("t")["vectors"]["pending"] == 0)
    info = kb.info("t")["vectors"]
    assert info["done"] == kb.info("t")["chunks"] and info["error"] is None
    after = kb.search("t", "瓦斯浓度达到多少时必须停止工作？")
    assert after.legs == ["lexical", "vector"] and after.hits[0].vector is not None
    assert kb.index("t").check() == []


def test_pending_vectors_survive_a_restart_and_failures(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "rules.md").write_text(ZH_SAFETY, encoding="utf-8")
    kb = make_service(settings)
    kb.create("t")
    kb.add_file("t", tmp_path / "rules.md")
    pending = kb.info("t")["vectors"]["pending"]
    kb.close()  # stopped before any vector was made

    kb = make_service(settings)
    try:
        assert kb.info("t")["vectors"]["pending"] == pending

        class Broken:
            name, dim = "broken", 384

            def known_fraction(self, text: str) -> float:
                return 1.0

            def embed(self, texts: list[str]) -> np.ndarray:
                raise RuntimeError("out of memory")

        real = kb.embedder
        kb.embedder = lambda name: Broken()  # type: ignore[method-assign,assignment,return-value]
        kb.resume_vectors()
        assert wait_for(lambda: kb.info("t")["vectors"]["error"] is not None)
        info = kb.info("t")
        assert "out of memory" in info["vectors"]["error"] and info["vectors"]["pending"] == pending
        assert info["documents"] == 1 and kb.search("t", "佩戴安全帽").hits  # the document is intact

        kb.vectors.close()  # the worker would retry in 30 s; embed in the foreground instead
        kb.embedder = real  # type: ignore[method-assign]
        assert kb.embed_pending("t") == pending
        assert kb.info("t")["vectors"]["done"] == pending and kb.info("t")["vectors"]["pending"] == 0
        assert kb.index("t").check() == []
    finally:
        kb.close()


def test_vectors_of_a_replaced_document_are_not_saved(kb: KnowledgeBaseService, tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    path.write_text("# 规程\n\n入井必须佩戴自救器。\n", encoding="utf-8")
    kb.create("t")
    kb.add_file("t", path)
    index = kb.index("t")
    stale = index.pending_batch(10)
    path.write_text("# 规程\n\n井下严禁吸烟。\n", encoding="utf-8")
    kb.add_file("t", path)  # replaced while its old chunks waited
    vectors = kb.bundled_embedder().embed([text for _, text in stale])
    assert index.store_vectors([cid for cid, _ in stale], vectors) == 0
    assert kb.embed_pending("t") == 1 and index.check() == []


# -- batch commands past bad input --------------------------------------------------------------


def test_batch_search_writes_one_line_per_input_and_goes_on(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "safety.md").write_text(ZH_SAFETY, encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["kb", "create", "s"]).exit_code == 0
    assert runner.invoke(cli, ["kb", "add", "s", str(docs)]).exit_code == 0
    queries = tmp_path / "q.jsonl"
    queries.write_bytes(b"\n".join([
        json.dumps({"id": "a", "question": "瓦斯浓度达到多少必须停止工作？"}, ensure_ascii=False).encode(),
        b"",                                     # blank
        b'{"id": "b", "question": ',             # malformed JSON
        json.dumps({"id": "c", "text": "no question field"}).encode(),
        json.dumps({"id": "d", "question": "   "}).encode(),  # empty question
        b"\xff\xfe broken bytes",                # not UTF-8
        "入井人员必须佩戴什么？".encode(),           # a plain line is a question
    ]) + b"\n")
    result = runner.invoke(cli, ["kb", "search", "s", "--queries", str(queries)])
    assert result.exit_code == 1  # some lines failed ...
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["line"] for x in lines] == [1, 2, 3, 4, 5, 6, 7]  # ... and every line has its result
    errors = {x["line"]: x["error"] for x in lines if "error" in x}
    assert set(errors) == {2, 3, 4, 5, 6}
    assert "blank" in errors[2] and "JSON" in errors[3] and "question" in errors[4]
    assert "empty" in errors[5] and "UTF-8" in errors[6]
    assert lines[0]["id"] == "a" and lines[0]["found"] and lines[6]["found"]
    assert "5 of 7 lines failed" in result.stderr


def test_add_folder_reports_each_bad_file_and_keeps_the_rest(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text(ZH_SAFETY, encoding="utf-8")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    (docs / "gone.md").symlink_to(tmp_path / "does-not-exist.md")  # unreadable
    write_xlsx(docs / "parts.xlsx")
    runner = CliRunner()
    runner.invoke(cli, ["kb", "create", "s"])
    result = runner.invoke(cli, ["kb", "add", "s", str(docs), "--json"])
    assert result.exit_code == 1
    out = {r["name"]: r for r in (json.loads(x) for x in result.stdout.splitlines())}
    assert set(out) == {"good.md", "broken.pdf", "gone.md", "parts.xlsx"}
    assert out["good.md"]["status"] == "added" and out["parts.xlsx"]["status"] == "added"
    assert out["broken.pdf"]["status"] == "failed" and "pdf" in out["broken.pdf"]["error"]
    assert out["gone.md"]["status"] == "failed" and "cannot read" in out["gone.md"]["error"]
    info = json.loads(runner.invoke(cli, ["kb", "info", "s", "--json"]).stdout)
    assert info["documents"] == 2 and info["vectors"]["pending"] == 0  # embedded in the foreground


# -- the approximate vector index --------------------------------------------------------------


def test_approximate_index_follows_adds_and_removes_across_reopen(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import bendi.kb.index as index_module

    monkeypatch.setattr(index_module, "ANN_MIN_VECTORS", 100)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 384)).astype(np.float32)

    def vectors(n: int, centre: int) -> np.ndarray:
        v = centres[centre] + 0.3 * rng.standard_normal((n, 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    path = tmp_path / "kb.sqlite"
    index = KnowledgeBaseIndex(path)
    index.set_meta({"dim": "384"})
    for d in range(40):
        chunks = [Chunk(i, f"document {d} chunk {i}", "", None, None, "text") for i in range(50)]
        index.put_document(name=f"d{d}", source=None, sha256=str(d), size=0, format="md", title=f"d{d}",
                           pages=None, warnings=[], chunks=chunks, vectors=vectors(50, d))
    query = centres[7] / np.linalg.norm(centres[7])
    ann = index.ann_index(wait=True)
    assert ann is not None and len(ann) == 2000 and (tmp_path / "vectors.faiss").is_file()
    top = index.nearest(query, 10)
    doc7 = {c.id for c in index.document_chunks("d7")}
    assert {cid for cid, _ in top} <= doc7  # exact similarities of approximate candidates

    index.remove_document("d7")
    assert not ({cid for cid, _ in index.nearest(query, 10)} & doc7)
    index.put_document(name="new", source=None, sha256="n", size=0, format="md", title="new", pages=None,
                       warnings=[], chunks=[Chunk(0, "new", "", None, None, "text")], vectors=query[None, :])
    new_id = index.document_chunks("new")[0].id
    assert index.nearest(query, 1)[0][0] == new_id
    index.close()

    reopened = KnowledgeBaseIndex(path)  # the saved index is brought up to date, not rebuilt
    ann = reopened.ann_index(wait=True)
    assert ann is not None and ann.trained_on == 2000
    ids = set(ann.ids().tolist())
    assert new_id in ids and not (ids & doc7) and len(ids) == 2000 - 50 + 1
    assert reopened.check() == []
    reopened.close()


# -- answers users can check --------------------------------------------------------------------


def _hit(n: int, text: str, document: str = "rules.md", page: int | None = None, section: str = "",
         rows: tuple[int, int] | None = None) -> Hit:
    return Hit(n, document, "规程", section, page, page, text, 1.0, 1.0, 1.0, 1, 0.9, 1, True,
               rows[0] if rows else None, rows[1] if rows else None)


def test_citations_carry_location_and_quote_and_unsupported_answers_are_flagged() -> None:
    sources = [
        _hit(1, "井下作业须知。工作面瓦斯浓度达到1.5%时，必须停止工作，撤出人员。瓦斯检查员每班检查两次。", page=3),
        _hit(2, "part | stock\nscraper blade | 12\nidler roller | 40", document="parts.xlsx",
             section="spare parts", rows=(2, 3)),
    ]
    good = check_answer("瓦斯浓度达到1.5%时必须停止工作，撤出人员[1]。The scraper blade stock is 12 [2].",
                        "瓦斯超限怎么办？", sources)
    assert good["grounded"] and good["unsupported"] == []
    first, second = good["citations"]
    assert (first["document"], first["page"]) == ("rules.md", 3)
    assert first["quote"] == "工作面瓦斯浓度达到1.5%时，必须停止工作，撤出人员。"
    assert (second["sheet"], second["rows"]) == ("spare parts", [2, 3])
    bad = check_answer("瓦斯浓度达到3%时才需要撤离，由通风科长决定[1]。", "瓦斯超限怎么办？", sources)
    assert not bad["grounded"] and "3%" in bad["unsupported"]
    uncited = check_answer("必须停止工作。", "瓦斯超限怎么办？", sources)
    assert not uncited["grounded"] and uncited["citations"] == []


# -- the gate's view of a question --------------------------------------------------------------


def test_query_words_keep_the_names_jieba_cuts_into_characters() -> None:
    from bendi.kb.segment import query_words

    # jieba cuts an unknown name into characters (雫/石); the name must stay one word to be asked for
    assert "雫石" in query_words("雫石车站是JR东日本所属的哪条地方交通线沿线的车站之一？")
    assert "胡天衡" in query_words("2014年12月胡天衡在媒体上发表的消息暗示了什么内容？")
    # a lone verb or function character joins nothing (拜 is not part of the name 刘德一)
    words = query_words("刘德一拜了谁当老师？")
    assert "刘德一" in words and not any("拜" in w for w in words)
    # no word straddles punctuation, and numbers keep their letters
    assert all("," not in w and "，" not in w for w in query_words("浓度达到1.5%时，必须停止工作"))
    assert "84m" in query_words("新巴84M线是来往哪里的巴士路线？")
    assert query_words("How often should the drive pulley bearings be lubricated?") == [
        "driv", "pulley", "bearing", "lubricat"]


def test_numbers_and_english_words_match_whole_words() -> None:
    from bendi.kb.segment import TermMatcher

    text = TermMatcher("教堂建于1987年，由 Barluzzi 设计。")
    assert text.has_word("1987") and not text.has_word("7") and not text.has_word("98")
    assert text.has_word("barluzzi") and text.has_word("教堂") and not text.has_word("教会")


def test_a_lone_character_counts_by_how_many_chunks_hold_it(kb: KnowledgeBaseService, tmp_path: Path) -> None:
    (tmp_path / "rules.md").write_text(ZH_SAFETY, encoding="utf-8")
    kb.create("t")
    kb.add_paths("t", [tmp_path / "rules.md"])
    index = kb.index("t")
    assert index.char_doc_freq("瓦", 100) >= 1  # in bigrams (瓦斯) only: found by prefix
    assert index.char_doc_freq("䲟", 100) == 0
    assert index.char_doc_freq("瓦", 1) == 1  # counted up to the cap

