"""The scale run of bench/kb.py: a knowledge base of N chunks (1,000,000 by default), built from
CMRC 2018 replicated with variations, searched with the approximate vector index (ann.py).

    .venv/bin/python bench/kb.py --scale 1000000     # about an hour on 2 cores; run it in the background

Texts: each CMRC chunk is replicated with its sentences rotated and its digits shifted, under a
numbered title, so the lexical leg sees a million different chunks. Vectors: embedding a million
chunks would take days on 2 cores, so a replica's vector is the real multilingual-e5 vector of
its original chunk plus Gaussian noise (cosine about 0.93 to the original, like a paraphrase),
normalised; the queries are real questions, embedded live by the real model. The approximate
index is measured against the exact scan of the same vectors, in the same run: the overlap of
their top-40 (neighbour recall) and the answer recall@5 of the whole search either way.

Also measured: ingest throughput (chunks/s, searchable lexically, vectors included), the time to
build the index, search latency (p50/p95, query embedding included), memory (process RSS and the
index), the size on disk, and that the index follows a document added and one removed, across a
reopen, without a rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bendi.kb.chunking import Chunk, chunk_blocks
from bendi.kb.embed import E5Embedder
from bendi.kb.index import KnowledgeBaseIndex, embedding_text
from bendi.kb.loaders import Block
from bendi.kb.retrieval import RetrievalSettings, search
from kb_split import load_data, split
from results_file import write_results

NOISE = 0.022  # per dimension: |noise| ~ 0.43, cosine to the original ~0.92
DIGITS = "0123456789"


def base_chunks(cache: Path) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    corpus, _ = load_data()
    data = np.load(cache, allow_pickle=False)
    vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
    out = []
    embedder: E5Embedder | None = None
    for d in corpus:
        for c in chunk_blocks([Block("heading", d["title"], level=1), Block("text", d["text"])]):
            text = embedding_text(d["title"], c.section, c.text)
            key = "p:" + hashlib.sha1(text.encode()).hexdigest()
            if key not in vectors:  # a few (untitled paragraphs): embedded now
                embedder = embedder or E5Embedder()
                vectors[key] = embedder.embed([text])[0]
            out.append({"doc": d["id"], "title": d["title"], "chunk": c, "vector": vectors[key]})
    return out, vectors


def variant(text: str, replica: int) -> str:
    sentences = re.findall(r"[^。！？]+[。！？]?", text) or [text]
    shift = replica % len(sentences)
    text = "".join(sentences[shift:] + sentences[:shift])
    shifted = DIGITS[replica % 10:] + DIGITS[: replica % 10]
    return text.translate(str.maketrans(DIGITS, shifted))


def ingest(index: KnowledgeBaseIndex, target: int, proc: psutil.Process) -> dict[str, Any]:
    """Fill `index` with `target` chunks: CMRC, then variants of it; the ingest figures."""
    cache = Path(__file__).resolve().parent / "results" / ".e5-cache.npz"
    base, _ = base_chunks(cache)
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for b in base:
        by_doc.setdefault(b["doc"], []).append(b)
    rng = np.random.default_rng(0)
    index.set_meta({"name": "scale", "embed": "multilingual-e5-small", "dim": "384"})
    total = replica = 0
    started = time.perf_counter()
    while total < target:
        for doc_id, parts in by_doc.items():
            chunks, vecs = [], []
            for i, b in enumerate(parts):
                c: Chunk = b["chunk"]
                text = c.text if replica == 0 else variant(c.text, replica)
                chunks.append(Chunk(i, text, c.section, None, None, "text"))
                v = b["vector"] if replica == 0 else b["vector"] + rng.normal(0, NOISE, 384).astype(np.float32)
                vecs.append(v / np.linalg.norm(v))
            title = parts[0]["title"] if replica == 0 else f"{parts[0]['title']}（{replica}）"
            index.put_document(name=f"r{replica}/{doc_id}", source=None, sha256=f"{replica}-{doc_id}", size=0,
                               format="md", title=title, pages=None, warnings=[], chunks=chunks,
                               vectors=np.stack(vecs))
            total += len(chunks)
            if total >= target:
                break
        replica += 1
        if replica % 20 == 0:
            rate = total / (time.perf_counter() - started)
            print(f"  {total:,} chunks, {rate:,.0f} chunks/s", flush=True)
    seconds = time.perf_counter() - started
    print(f"ingest: {total:,} chunks in {seconds:.0f} s ({total / seconds:,.0f} chunks/s)", flush=True)
    return {"chunks": total, "replicas": replica, "seconds": seconds, "chunks_per_s": total / seconds,
            "db_bytes": index.stats()["bytes"], "rss_bytes": proc.memory_info().rss}


def scale_main(target: int, out: Path, keep: Path | None = None) -> None:
    """The scale run; with `keep` the knowledge base is built in that folder and kept, and a later
    run with the same folder reuses it (the ingest figures are the ones measured when it was built)."""
    started_all = time.time()
    proc = psutil.Process()
    report: dict[str, Any] = {"target_chunks": target}
    with contextlib.ExitStack() as stack:
        folder = keep if keep is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="bendi-kb-scale-")))
        folder.mkdir(parents=True, exist_ok=True)
        index = KnowledgeBaseIndex(folder / "kb.sqlite")
        if int(index.meta("scale_chunks") or 0) == target:
            report["ingest"] = json.loads(index.meta("scale_ingest") or "{}")
            print(f"reusing the knowledge base of {target:,} chunks in {folder}", flush=True)
        else:
            if index.n_chunks():
                index.close()
                for f in folder.glob("kb.sqlite*"):
                    f.unlink()
                (folder / "vectors.faiss").unlink(missing_ok=True)
                index = KnowledgeBaseIndex(folder / "kb.sqlite")
            report["ingest"] = ingest(index, target, proc)
            index.set_meta({"scale_chunks": str(target), "scale_ingest": json.dumps(report["ingest"])})
        started = time.perf_counter()
        ann = index.ann_index(wait=True)
        assert ann is not None
        report["ann_build_s"] = time.perf_counter() - started
        report["ann_bytes"] = ann.memory_bytes()
        print(f"index built in {report['ann_build_s']:.0f} s", flush=True)

        _, queries = load_data()
        sample = random.Random(1).sample([q for q in queries if split(q["doc_id"])[1]], 300)
        embedder = E5Embedder()
        settings = RetrievalSettings()
        embedder.embed_query(["预热"])
        report["search"] = measure(index, embedder, sample, settings)
        report["rss_after_search_bytes"] = proc.memory_info().rss
        print(f"search: {report['search']}", flush=True)
        # the exact scan over the same vectors, for the approximate leg's recall
        report["exact_vs_ann"] = compare_exact(index, embedder, sample, settings)
        print(f"exact vs approximate: {report['exact_vs_ann']}", flush=True)
        report["consistency"] = consistency(index, embedder, folder)
        index.close()
    print_scale(report)
    write_results(out, "kb_scale", started_all, **report)


def measure(index: KnowledgeBaseIndex, embedder: Any, sample: list[dict[str, Any]],
            settings: RetrievalSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, s in {"hybrid": settings, "lexical": settings.updated(vector_weight=0.0)}.items():
        latencies, hits5 = [], 0
        for q in sample:
            r = search(index, embedder, q["question"], s, include_all=True)
            latencies.append(r.seconds * 1000)
            hits5 += any(any(a in h.text for a in q["answers"]) for h in r.hits[:5])
        out[mode] = {"p50_ms": float(np.percentile(latencies, 50)), "p95_ms": float(np.percentile(latencies, 95)),
                     "recall@5": hits5 / len(sample)}
    return out


def compare_exact(index: KnowledgeBaseIndex, embedder: Any, sample: list[dict[str, Any]],
                  settings: RetrievalSettings) -> dict[str, Any]:
    ann = index.ann_index(wait=True)
    assert ann is not None
    ids, matrix, _ = index.vector_matrix()
    overlap, ann_ms, exact_ms = [], [], []
    for q in sample:
        qv = embedder.embed_query([q["question"]])[0]
        t = time.perf_counter()
        approx = index.nearest(qv, 40)
        ann_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        sims = matrix @ qv
        top = ids[np.argpartition(-sims, 39)[:40]]
        exact_ms.append((time.perf_counter() - t) * 1000)
        overlap.append(len({c for c, _ in approx} & set(top.tolist())) / 40)
    # answer recall of the whole search with the exact scan instead of the index
    import bendi.kb.index as index_module

    saved = index_module.ANN_MIN_VECTORS
    index_module.ANN_MIN_VECTORS = 10**12
    try:
        exact = measure(index, embedder, sample, settings)["hybrid"]
    finally:
        index_module.ANN_MIN_VECTORS = saved
    del matrix
    return {"neighbour_recall@40": float(np.mean(overlap)), "ann_p95_ms": float(np.percentile(ann_ms, 95)),
            "exact_p95_ms": float(np.percentile(exact_ms, 95)), "hybrid_exact_recall@5": exact["recall@5"],
            "hybrid_exact_p95_ms": exact["p95_ms"]}


def consistency(index: KnowledgeBaseIndex, embedder: Any, tmp: Path) -> dict[str, Any]:
    """A document added and one removed show up in the index; a reopen syncs without a rebuild."""
    text = "星澜泽矿区的第七号通风机每周由赵清远检修一次。"
    vec = embedder.embed([embedding_text("星澜泽", "星澜泽", text)])
    index.put_document(name="new.md", source=None, sha256="new", size=0, format="md", title="星澜泽", pages=None,
                       warnings=[], chunks=[Chunk(0, text, "星澜泽", None, None, "text")], vectors=vec)
    victim = next(d for d in index.documents() if d.name != "new.md")
    victim_ids = [c.id for c in index.document_chunks(victim.name)]
    index.remove_document(victim.name)
    q = embedder.embed_query(["星澜泽矿区的通风机多久检修一次？"])[0]
    started = time.perf_counter()
    found = index.nearest(q, 10)
    sync_s = time.perf_counter() - started
    new_id = index.document_chunks("new.md")[0].id
    ok_add = new_id in [c for c, _ in found]
    ann = index.ann_index(wait=True)
    assert ann is not None
    ids = set(ann.ids().tolist())
    ok_remove = not (set(victim_ids) & ids)
    index.close()
    reopened = KnowledgeBaseIndex(tmp / "kb.sqlite")
    started = time.perf_counter()
    ann2 = reopened.ann_index(wait=True)
    reopen_s = time.perf_counter() - started
    ok_reopen = ann2 is not None and new_id in set(ann2.ids().tolist())
    reopened.close()
    return {"added_found": ok_add, "removed_gone": ok_remove, "sync_after_change_s": sync_s,
            "reopen_s": reopen_s, "reopen_has_new": ok_reopen}


def print_scale(r: dict[str, Any]) -> None:
    ing, s, ex = r["ingest"], r["search"], r["exact_vs_ann"]
    print(f"\nscale: {ing['chunks']:,} chunks ({ing['replicas']} variants of CMRC): ingest {ing['seconds']:.0f} s"
          f" = {ing['chunks_per_s']:,.0f} chunks/s (text, lexical index and vectors), db {ing['db_bytes'] / 1e9:.2f} GB")
    print(f"  approximate index: built in {r['ann_build_s']:.0f} s, {r['ann_bytes'] / 1e6:.0f} MB; "
          f"process RSS {r['rss_after_search_bytes'] / 1e9:.2f} GB")
    print(f"  hybrid search (query embedding included): p50 {s['hybrid']['p50_ms']:.1f} ms, p95 "
          f"{s['hybrid']['p95_ms']:.1f} ms (target < 100); lexical only p95 {s['lexical']['p95_ms']:.1f} ms")
    print(f"  approximate leg: neighbour recall@40 {ex['neighbour_recall@40']:.3f} of the exact scan; answer recall@5 "
          f"{s['hybrid']['recall@5']:.3f} vs {ex['hybrid_exact_recall@5']:.3f} exact "
          f"(x{s['hybrid']['recall@5'] / max(ex['hybrid_exact_recall@5'], 1e-9):.3f}, target >= 0.98)")
    print(f"  vector leg alone: approximate p95 {ex['ann_p95_ms']:.1f} ms, exact scan p95 {ex['exact_p95_ms']:.1f} ms")
    c = r["consistency"]
    print(f"  consistency: added found {c['added_found']}, removed gone {c['removed_gone']}, "
          f"reopen synced in {c['reopen_s']:.1f} s with the new document {c['reopen_has_new']}")
