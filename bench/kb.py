"""Knowledge-base retrieval benchmark on CMRC 2018 (dev): recall, MRR, latency, scale, not-found.

    .venv/bin/python bench/kb.py                 # base run (~848 paragraphs, 3,219 questions)
    .venv/bin/python bench/kb.py --scale 100000  # also the ~100,000-chunk scale run (minutes)

Prints a table and writes bench/results/kb.json. Baselines come from the same run: lexical-only
is the baseline for hybrid, and the 1x corpus for the scale run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from bendi.config import Settings  # noqa: E402
from bendi.kb.chunking import chunk_blocks  # noqa: E402
from bendi.kb.index import KnowledgeBaseIndex  # noqa: E402
from bendi.kb.loaders import Block  # noqa: E402
from bendi.kb.retrieval import RetrievalSettings, search  # noqa: E402
from bendi.services import Services  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cmrc2018"
if not DATA.exists():
    DATA = Path("/work/shared/data/cmrc2018")

# Questions about things absent from the corpus (written for this benchmark; checked against the
# corpus below: any whose key words all occur in one paragraph are dropped and reported).
OUT_OF_KB = [
    "2022年卡塔尔世界杯的冠军是哪个国家？", "ChatGPT是哪家公司在2022年发布的？", "特斯拉Model Y的续航里程是多少公里？",
    "华为Mate 60手机使用的是什么芯片？", "煤矿井下瓦斯浓度超过多少必须停止作业？", "自救器的有效防护时间一般是多少分钟？",
    "皮带输送机检修前需要执行什么挂牌制度？", "新冠疫苗第一针和第二针的间隔是多少天？", "比特币的总量上限是多少枚？",
    "北京大兴国际机场是哪一年正式通航的？", "杭州亚运会的吉祥物叫什么名字？", "天问一号探测器在火星哪个区域着陆？",
    "嫦娥五号带回了多少克月球样品？", "港珠澳大桥的全长是多少公里？", "微信支付是在哪一年上线的？",
    "抖音的母公司是哪家企业？", "东京奥运会推迟到哪一年举行？", "詹姆斯·韦布空间望远镜的主镜直径是多少米？",
    "量子计算机九章是由哪所大学研制的？", "深圳地铁14号线的终点站是哪里？", "Python 3.12版本引入了哪些新语法？",
    "大型语言模型的参数量通常用什么单位衡量？", "液氮的沸点是多少摄氏度？", "锂电池热失控的主要原因有哪些？",
    "光伏组件的转换效率一般在什么范围？", "矿用本安型设备的防爆标志是什么？", "井下避难硐室的额定防护时间是多少小时？",
    "综采工作面液压支架的初撑力应达到多少？", "掘进机截割头的转速一般是多少？", "矿井主要通风机的备用风机多久切换一次？",
    "瓦斯抽采泵站的安全距离要求是什么？", "冲击地压的预警指标有哪些？", "矿灯的连续照明时间不得少于多少小时？",
    "井下带式输送机的防跑偏装置如何调整？", "煤尘爆炸的下限浓度是多少？", "防突钻孔的深度一般是多少米？",
    "透水事故发生前有哪些征兆？", "采空区自然发火的预防措施有哪些？", "井下人员定位系统的精度要求是多少米？",
    "矿山救护队到达事故矿井的时间要求是多少分钟？", "2023年诺贝尔文学奖得主是谁？", "梅西在哪一年第一次获得世界杯冠军？",
    "中国空间站天和核心舱是哪一年发射的？", "雄安新区设立于哪一年？", "复兴号动车组的最高运营速度是多少？",
    "小米汽车SU7的发布时间是什么时候？", "元宇宙这个概念最早出自哪部小说？", "电动汽车充电桩的国标接口有几种？",
    "5G网络的理论峰值速率是多少？", "北斗三号全球卫星导航系统何时建成？", "淘宝双十一在2019年的成交额是多少？",
    "人工智能AlphaGo在哪一年击败了李世石？", "SpaceX星舰第一次轨道试飞是在哪一年？", "核酸检测的Ct值代表什么意思？",
    "碳达峰碳中和的目标年份分别是哪一年？", "长江十年禁渔从哪一年开始实施？", "冬奥会吉祥物冰墩墩的原型是什么动物？",
    "国产大飞机C919的首次商业飞航是哪一年？", "TikTok在美国的用户数量是多少？", "高铁列车上禁止携带哪些物品？",
]

INVENTED = ["星澜泽", "霁川", "奥维斯塔", "默林岗", "苍翎", "泽拉诺", "叶孚", "岚橙", "科莫雷", "昭沐"]


def load_data() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").open(encoding="utf-8")]
    queries = [json.loads(line) for line in (DATA / "queries.jsonl").open(encoding="utf-8")]
    return corpus, queries


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def evaluate(index: KnowledgeBaseIndex, embedder: Any, queries: list[dict[str, Any]],
             settings: RetrievalSettings) -> dict[str, Any]:
    """Answer recall@1/@5 and MRR@10 at chunk level (a ranked chunk contains an answer span)."""
    r1 = r5 = 0
    rr = 0.0
    latencies: list[float] = []
    best_relevance: list[float] = []
    for q in queries:
        result = search(index, embedder, q["question"], settings, include_all=True)
        latencies.append(result.seconds * 1000)
        rank = next((i for i, h in enumerate(result.hits, 1) if any(a in h.text for a in q["answers"])), None)
        if rank is not None:
            r1 += rank == 1
            r5 += rank <= 5
            rr += 1.0 / rank
        best_relevance.append(max((h.lexical for h in result.hits), default=0.0))
    n = len(queries)
    return {"recall@1": r1 / n, "recall@5": r5 / n, "mrr@10": rr / n, "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95), "queries": n, "_best": best_relevance}


def best_relevance(index: KnowledgeBaseIndex, embedder: Any, questions: list[str],
                   settings: RetrievalSettings) -> list[tuple[float, float]]:
    """(best lexical relevance, best vector similarity or -1) of each question's candidates."""
    out = []
    for text in questions:
        hits = search(index, embedder, text, settings, include_all=True).hits
        out.append((max((h.lexical for h in hits), default=0.0),
                    max((h.vector for h in hits if h.vector is not None), default=-1.0)))
    return out


def perturbed(queries: list[dict[str, Any]], corpus: dict[str, dict[str, Any]], rng: random.Random) -> list[str]:
    """In-corpus questions whose subject (the paragraph's title) is swapped for an invented name."""
    out = []
    for q in queries:
        title = corpus[q["doc_id"]]["title"]
        if len(title) >= 2 and title in q["question"]:
            out.append(q["question"].replace(title, rng.choice(INVENTED)))
    return out


def choose_threshold(in_scores: list[float], want_pass: float) -> float:
    """The highest threshold that lets `want_pass` of in-corpus questions through."""
    ordered = sorted(in_scores)
    return ordered[int((1.0 - want_pass) * len(ordered))]


def scale_run(corpus: list[dict[str, Any]], queries: list[dict[str, Any]], target: int, workdir: Path,
              embedder: Any, settings: RetrievalSettings) -> dict[str, Any]:
    """Replicate the corpus with variations up to `target` chunks; ingest, search latency, size."""
    index = KnowledgeBaseIndex(workdir / "scale" / "kb.sqlite")
    index.set_meta({"name": "scale", "embed": "synthetic", "dim": "384"})
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    chunks_total = chars = replica = 0
    embed_seconds = 0.0
    while chunks_total < target:
        for doc in corpus:
            sentences = re.findall(r"[^。！？]+[。！？]?", doc["text"])
            shift = replica % max(1, len(sentences))
            text = "".join(sentences[shift:] + sentences[:shift])  # variation: rotated sentences ...
            digits = "0123456789"
            shifted = digits[replica % 10:] + digits[: replica % 10]
            text = text.translate(str.maketrans(digits, shifted))  # ... other numbers
            title = doc["title"] if replica == 0 else f"{doc['title']}（{replica}）"
            chunks = chunk_blocks([Block("heading", title, level=1), Block("text", text)])
            # Synthetic unit vectors for every chunk, so the exact vector search scans the full
            # matrix; real MiniLM embedding cost is measured in the base run instead.
            vecs = rng.standard_normal((len(chunks), 384)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            index.put_document(name=f"r{replica}/{doc['id']}.md", source=None, sha256=f"{replica}-{doc['id']}",
                               size=len(text), format="md", title=title, pages=None, warnings=[], chunks=chunks,
                               vectors=vecs)
            chunks_total += len(chunks)
            chars += len(text)
            if chunks_total >= target:
                break
        replica += 1
    ingest_seconds = time.perf_counter() - started - embed_seconds
    forced = settings.updated(min_known=0.0)  # both legs run on every query
    sample = random.Random(1).sample(queries, 300)
    search(index, embedder, sample[0]["question"], forced)  # loads the vector matrix once
    latencies = []
    for q in sample:
        latencies.append(search(index, embedder, q["question"], forced).seconds * 1000)
    lex_only = settings.updated(vector_weight=0.0)
    lex_lat = [search(index, embedder, q["question"], lex_only).seconds * 1000 for q in sample]
    stats = index.stats()
    index.close()
    return {"chunks": chunks_total, "documents": stats["documents"], "replicas": replica,
            "ingest_seconds": ingest_seconds, "ingest_chars_per_s": chars / ingest_seconds,
            "hybrid_p50_ms": percentile(latencies, 50), "hybrid_p95_ms": percentile(latencies, 95),
            "lexical_p95_ms": percentile(lex_lat, 95), "db_bytes": stats["bytes"],
            "vectors": "synthetic random unit vectors (384 dims) for every chunk"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=0, help="chunks for the scale run (0: skip; e.g. 100000)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N questions (quick runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "kb.json")
    args = parser.parse_args()

    corpus, queries = load_data()
    if args.limit:
        queries = queries[: args.limit]
    by_id = {d["id"]: d for d in corpus}
    report: dict[str, Any] = {"data": str(DATA), "paragraphs": len(corpus), "questions": len(queries),
                              "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bendi-kb-bench-") as tmp:
        work = Path(tmp)
        settings_obj = Settings.from_env(env={}, home=work / "home")
        kb = Services.build(settings_obj).kb
        docs = work / "docs"
        docs.mkdir()
        for d in corpus:
            (docs / f"{d['id']}.md").write_text(f"# {d['title']}\n\n{d['text']}\n", encoding="utf-8")
        kb.create("cmrc")
        kb.bundled_embedder()  # load the model outside the timed ingest
        started = time.perf_counter()
        results = kb.add_paths("cmrc", [docs])
        ingest = time.perf_counter() - started
        chars = sum(len(d["title"]) + len(d["text"]) for d in corpus)
        info = kb.info("cmrc")
        index, embedder = kb.index("cmrc"), kb.embedder("cmrc")
        n_vectors = sum(d.n_vectors for d in index.documents())
        report["ingest"] = {"seconds": ingest, "chars_per_s": chars / ingest, "chunks": info["chunks"],
                            "vectors": n_vectors, "failed": sum(r.status == "failed" for r in results),
                            "db_bytes": info["bytes"]}
        # English embedding throughput, for the cost of real vectors on a large English base
        english = [f"Section {i}: before maintenance stop the conveyor, isolate the power supply and hang a "
                   f"warning tag on the switch; check the scrapers every shift and grease the bearings." for i in range(64)]
        t = time.perf_counter()
        kb.bundled_embedder().embed(english)
        report["minilm_chunks_per_s"] = 64 / (time.perf_counter() - t)

        base = kb.retrieval_settings("cmrc")
        modes = {
            "lexical": base.updated(vector_weight=0.0),
            "vector": base.updated(lexical_weight=0.0, min_known=0.0),
            "hybrid": base,
        }
        report["retrieval"] = {}
        for mode, s in modes.items():
            report["retrieval"][mode] = evaluate(index, embedder, queries, s)

        # not-found: threshold chosen on the dev half (even paragraph numbers), reported on the rest
        best = report["retrieval"]["hybrid"].pop("_best")
        for m in ("lexical", "vector"):
            report["retrieval"][m].pop("_best")
        is_dev = [int(q["doc_id"].split("_")[1]) % 2 == 0 for q in queries]
        rng = random.Random(7)
        ook = OUT_OF_KB
        pert = perturbed(queries, by_id, rng)
        ook_scores = best_relevance(index, embedder, ook, base)
        pert_scores = best_relevance(index, embedder, pert, base)
        in_dev = [b for b, d in zip(best, is_dev, strict=True) if d]
        in_test = [b for b, d in zip(best, is_dev, strict=True) if not d]
        threshold = choose_threshold(in_dev, 0.96)
        ook_dev, ook_test = ook_scores[0::2], ook_scores[1::2]
        pert_dev, pert_test = pert_scores[0::2], pert_scores[1::2]

        def rejected(scores: list[tuple[float, float]], t: float) -> float:
            return sum(1 for lex, _ in scores if lex < t) / max(1, len(scores))

        report["not_found"] = {
            "threshold_min_lexical": threshold,
            "chosen_on": f"dev half: {len(in_dev)} in-corpus questions (even paragraph ids), 96% pass target",
            "in_corpus_pass_rate_test": sum(1 for b in in_test if b >= threshold) / len(in_test),
            "in_corpus_pass_rate_dev": sum(1 for b in in_dev if b >= threshold) / len(in_dev),
            "out_of_kb_written": {"n": len(ook), "not_found_rate_test": rejected(ook_test, threshold),
                                  "not_found_rate_dev": rejected(ook_dev, threshold)},
            "out_of_kb_perturbed": {"n": len(pert), "how": "subject (paragraph title) replaced by an invented name",
                                    "not_found_rate_test": rejected(pert_test, threshold),
                                    "not_found_rate_dev": rejected(pert_dev, threshold)},
            "default_min_lexical": base.min_lexical,
            "default_in_corpus_pass_rate_test": sum(1 for b in in_test if b >= base.min_lexical) / len(in_test),
            "default_out_of_kb_not_found_test": rejected(ook_test, base.min_lexical),
            "default_perturbed_not_found_test": rejected(pert_test, base.min_lexical),
        }

        if args.scale:
            report["scale"] = scale_run(corpus, queries, args.scale, work, embedder, base)
        kb.close()

    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\nwrote {args.out}")


def print_report(r: dict[str, Any]) -> None:
    ing = r["ingest"]
    print(f"CMRC 2018 dev: {r['paragraphs']} paragraphs -> {ing['chunks']} chunks ({ing['vectors']} with "
          f"vectors), {r['questions']} questions")
    print(f"ingest: {ing['seconds']:.1f} s, {ing['chars_per_s']:,.0f} chars/s, db {ing['db_bytes'] / 1e6:.1f} MB; "
          f"MiniLM {r['minilm_chunks_per_s']:.1f} English chunks/s")
    print()
    print(f"{'mode':<8} {'recall@1':>9} {'recall@5':>9} {'MRR@10':>8} {'p50 ms':>8} {'p95 ms':>8}")
    lex = r["retrieval"]["lexical"]
    for mode, m in r["retrieval"].items():
        print(f"{mode:<8} {m['recall@1']:>9.3f} {m['recall@5']:>9.3f} {m['mrr@10']:>8.3f} {m['p50_ms']:>8.1f} "
              f"{m['p95_ms']:>8.1f}")
    hy = r["retrieval"]["hybrid"]
    print(f"hybrid / lexical baseline: recall@5 x{hy['recall@5'] / max(lex['recall@5'], 1e-9):.3f}, "
          f"p95 x{hy['p95_ms'] / max(lex['p95_ms'], 1e-9):.2f}")
    nf = r["not_found"]
    print()
    print(f"threshold min_lexical={nf['threshold_min_lexical']:.3f} ({nf['chosen_on']})")
    print(f"  in-corpus pass (test half): {nf['in_corpus_pass_rate_test']:.3f}")
    print(f"  out-of-KB written ({nf['out_of_kb_written']['n']}): not found "
          f"{nf['out_of_kb_written']['not_found_rate_test']:.3f} (test half), "
          f"{nf['out_of_kb_written']['not_found_rate_dev']:.3f} (dev half)")
    print(f"  out-of-KB perturbed ({nf['out_of_kb_perturbed']['n']}): not found "
          f"{nf['out_of_kb_perturbed']['not_found_rate_test']:.3f} (test half)")
    print(f"  shipped default min_lexical={nf['default_min_lexical']}: in-corpus pass "
          f"{nf['default_in_corpus_pass_rate_test']:.3f}, out-of-KB not found {nf['default_out_of_kb_not_found_test']:.3f},"
          f" perturbed not found {nf['default_perturbed_not_found_test']:.3f}")
    if "scale" in r:
        s = r["scale"]
        print()
        print(f"scale: {s['chunks']:,} chunks ({s['replicas']} variants of the corpus): ingest {s['ingest_seconds']:.0f} s "
              f"({s['ingest_chars_per_s']:,.0f} chars/s, no embedding), db {s['db_bytes'] / 1e6:.0f} MB")
        print(f"  hybrid search p50 {s['hybrid_p50_ms']:.1f} ms, p95 {s['hybrid_p95_ms']:.1f} ms; "
              f"lexical-only p95 {s['lexical_p95_ms']:.1f} ms (baseline, same run)")
        base_p95 = r["retrieval"]["hybrid"]["p95_ms"]
        print(f"  p95 at scale / p95 at 1x: x{s['hybrid_p95_ms'] / max(base_p95, 1e-9):.1f}")


if __name__ == "__main__":
    main()
