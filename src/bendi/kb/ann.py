"""Approximate nearest neighbours for large knowledge bases: a faiss IVF index in a file next to
kb.sqlite.

Below `ANN_MIN_VECTORS` the vector leg scans every vector exactly (numpy; a few milliseconds at
100,000 chunks). Above it, scanning is memory-bound (1,000,000 x 384 float32 is 1.5 GB a query),
so candidates come from an inverted-file index: k-means cells over the vectors, 8-bit scalar
quantised codes (a quarter of the memory of float32), and only the `nprobe` cells nearest to the
query are scanned. The candidates' exact similarities are then recomputed from the stored
float32 vectors, so the approximation only decides which chunks are considered, not their scores.

Consistency: the SQLite `vectors` table is the truth. The index file records the vectors
generation it reflects; when a document is added or removed (by this process or another one),
the next search brings the index up to date by the difference of chunk ids (new vectors added,
removed ones dropped) instead of rebuilding it, and saves it once searches go quiet. A crash
loses at most that difference, which the next open recomputes. When the number of vectors has
grown fourfold since the cells were trained, the index is rebuilt so the cells fit the data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: at or above this many vectors the vector leg uses the approximate index
ANN_MIN_VECTORS = int(os.environ.get("BENDI_KB_ANN_MIN", "50000"))
#: cells scanned per query (of about 4*sqrt(n)); bench/kb.py --scale measures its recall
DEFAULT_NPROBE = 48
#: the index is retrained when the vectors outgrow the training set by this factor
RETRAIN_GROWTH = 4.0


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


class AnnIndex:
    """An IVF + SQ8 faiss index over (chunk id, vector), saved as `path` with a JSON sidecar."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.meta_path = path.with_suffix(path.suffix + ".json")
        self.dim = dim
        self.generation = -1
        self.trained_on = 0
        self.dirty_since: float | None = None
        self._index: Any = None
        self._lock = threading.RLock()

    # -- life cycle ----------------------------------------------------------------------------

    def load(self) -> bool:
        """Read the saved index; False when there is none (or it is unreadable: it is rebuilt)."""
        if not (self.path.is_file() and self.meta_path.is_file()):
            return False
        try:
            meta = json.loads(self.meta_path.read_text())
            index = _faiss().read_index(str(self.path))
        except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt from the database
            log.warning("the vector index %s is unreadable; rebuilding it", self.path, exc_info=True)
            return False
        if index.d != self.dim:
            return False
        with self._lock:
            self._index = index
            self.generation = int(meta.get("generation", -1))
            self.trained_on = int(meta.get("trained_on", index.ntotal))
        return True

    def build(self, ids: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray], generation: int,
              *, threads: int | None = None) -> None:
        """Train cells on a sample of the vectors, then add them all (in batches, so memory stays bounded)."""
        faiss = _faiss()
        if threads:
            faiss.omp_set_num_threads(threads)
        n = len(ids)
        nlist = int(min(16384, max(64, 4 * math.sqrt(max(n, 1)))))
        rng = np.random.default_rng(0)
        # k-means on 30 points a cell, 10 rounds: cells good enough to route queries, in minutes
        # rather than the hour that faiss's defaults take at a million vectors on 2 cores
        sample = np.sort(rng.choice(ids, size=min(n, 30 * nlist), replace=False))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        started = time.perf_counter()
        index.train(np.ascontiguousarray(fetch(sample), dtype=np.float32))
        for start in range(0, n, 50_000):
            part = ids[start : start + 50_000]
            index.add_with_ids(np.ascontiguousarray(fetch(part), dtype=np.float32), part.astype(np.int64))
        index.nprobe = DEFAULT_NPROBE
        log.info("built a %d-cell vector index over %d vectors in %.1f s", nlist, n, time.perf_counter() - started)
        with self._lock:
            self._index = index
            self.generation = generation
            self.trained_on = n
            self.dirty_since = time.monotonic()

    def save(self) -> None:
        """Write the index and its sidecar atomically (a reader never sees half a file)."""
        with self._lock:
            if self._index is None:
                return
            tmp = self.path.with_suffix(".tmp")
            _faiss().write_index(self._index, str(tmp))
            os.replace(tmp, self.path)
            meta_tmp = self.meta_path.with_suffix(".tmp")
            meta_tmp.write_text(json.dumps({"generation": self.generation, "trained_on": self.trained_on,
                                            "vectors": int(self._index.ntotal)}))
            os.replace(meta_tmp, self.meta_path)
            self.dirty_since = None

    # -- keeping it consistent -----------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._index is not None

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        """Chunk ids in the index (read from its inverted lists)."""
        faiss = _faiss()
        with self._lock:
            if self._index is None:
                return np.zeros(0, np.int64)
            lists = self._index.invlists
            parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                     for i in range(self._index.nlist) if lists.list_size(i)]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def needs_rebuild(self, n_vectors: int) -> bool:
        return self._index is None or n_vectors > RETRAIN_GROWTH * max(1, self.trained_on)

    def sync(self, truth: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray], generation: int) -> tuple[int, int]:
        """Add the vectors in `truth` (sorted chunk ids) that the index lacks, drop those it has
        that are gone; (added, removed)."""
        faiss = _faiss()
        with self._lock:
            have = self.ids()
            missing = np.setdiff1d(truth, have, assume_unique=True)
            extra = np.setdiff1d(have, truth, assume_unique=True)
            if len(extra):
                self._index.remove_ids(faiss.IDSelectorBatch(extra.astype(np.int64)))
            for start in range(0, len(missing), 50_000):
                part = missing[start : start + 50_000]
                self._index.add_with_ids(np.ascontiguousarray(fetch(part), dtype=np.float32), part.astype(np.int64))
            self.generation = generation
            if len(missing) or len(extra):
                self.dirty_since = self.dirty_since or time.monotonic()
        return len(missing), len(extra)

    # -- search --------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, nprobe: int | None = None) -> list[tuple[int, float]]:
        """Approximate top-k (chunk id, inner product of the 8-bit codes) for a unit query vector."""
        with self._lock:
            if self._index is None or self._index.ntotal == 0:
                return []
            self._index.nprobe = nprobe or DEFAULT_NPROBE
            sims, ids = self._index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], sims[0], strict=True) if i >= 0]

    def memory_bytes(self) -> int:
        """Approximate resident size: codes, ids and centroids."""
        if self._index is None:
            return 0
        return int(self._index.ntotal) * (self.dim + 8) + int(self._index.nlist) * self.dim * 4
