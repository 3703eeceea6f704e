"""Approximate search over the coarse video vectors, with faiss (an inverted file of fp16 vectors).

Why faiss's IVF with fp16 storage: at a million videos an exact scan reads every vector per
query; the inverted file reads ``nprobe`` of ``nlist`` clusters, and fp16 storage keeps the
scores exact to half precision within them, so the only loss is the clusters it skips (measured
as recall of the exact top 10 in bench/bench_ann_scale.py and BENCHMARKS.md).

The tuning, measured at 1M on one core (bench/bench_ann_scale.py, side by side in one run):
``nlist`` 4 sqrt(N) (4,000 lists at 1M) trained on 64 vectors per list, probed 32 at a time, answers
in about 0.4 ms with recall 1.0 for queries near their video and 0.96 for queries as far as CLIP's
captions are, where search.index's first rule (sqrt(N) lists, 128 probes) took 4.5 ms for 0.84, and
faiss's HNSW (M 32, fp16) needed 1.1 ms for 0.87 after an 8-minute build (IVF: about a minute).
An index records the nprobe it was built for (``ann.nprobe`` in index.json); one built before
that record existed was built with sqrt(N) lists and keeps 128.

Below ``ANN_MIN_VIDEOS`` the exact scan is fast enough that approximation does not pay
(BENCHMARKS.md); ``python -m search.index`` builds the file from that size on (``--ann auto``).
"""

from __future__ import annotations

import math

import numpy as np

LISTS_PER_SQRT_N = 4
DEFAULT_NPROBE = 32  # of 4 sqrt(N) lists (the module docstring: measured recall and time)
LEGACY_NPROBE = 128  # of sqrt(N) lists: indexes whose index.json records no nprobe
TRAINING_POINTS_PER_LIST = 64


def _faiss():  # imported when used: exact search and indexing without ANN do not load it
    import faiss

    return faiss


def build_ann(vectors: np.ndarray, seed: int = 0, lists: int | None = None) -> bytes:
    """An IVF-fp16 inner-product index over ``vectors`` (N, D); ids are row numbers. Serialised."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    lists = min(count, lists or max(1, int(LISTS_PER_SQRT_N * math.sqrt(count))))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    sample = min(count, lists * TRAINING_POINTS_PER_LIST)
    chosen = np.random.default_rng(seed).choice(count, size=sample, replace=False) if sample < count else np.arange(count)
    index.train(vectors[np.sort(chosen)])
    index.add(vectors)
    return faiss.serialize_index(index).tobytes()


HNSW_M = 32  # links per node: 32 keeps far queries' recall high at a 1M scale (bench/bench_ann_scale.py)
HNSW_EF_CONSTRUCTION = 80


def build_hnsw(vectors: np.ndarray, m: int = HNSW_M, ef_construction: int = HNSW_EF_CONSTRUCTION) -> bytes:
    """An HNSW graph over fp16 vectors, inner product; ids are row numbers. Serialised."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexHNSWSQ(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    index.train(vectors[: min(len(vectors), 10_000)])  # fp16 needs no statistics; faiss still asks for a train call
    index.add(vectors)
    return faiss.serialize_index(index).tobytes()


class ApproximateSearch:
    """A loaded IVF index; ``search`` returns the top-k rows by approximate inner product."""

    def __init__(self, serialised: bytes, nprobe: int = DEFAULT_NPROBE) -> None:
        faiss = _faiss()
        self.index = faiss.deserialize_index(np.frombuffer(serialised, dtype=np.uint8))
        self.index.nprobe = nprobe

    @property
    def rows(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, D) queries -> (B, k) scores and rows; rows are -1 where fewer than k were found."""
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, rows
