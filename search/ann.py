"""Approximate search over the coarse video vectors, with faiss (an inverted file of fp16 vectors).

Why faiss's IVF with fp16 storage: at a million videos an exact scan reads every vector per
query; the inverted file reads ``nprobe`` of ``nlist`` clusters, and fp16 storage keeps the
scores exact to half precision within them, so the only loss is the clusters it skips (measured
as recall of the exact top 10 in bench/bench_search.py and BENCHMARKS.md). ``nlist`` is
sqrt(N), trained on at most 64 vectors per list: k-means and adding a million vectors take
seconds on two cores, where a graph index (HNSW) takes many minutes to build.

Below ``ANN_MIN_VIDEOS`` the exact scan is fast enough that approximation does not pay
(BENCHMARKS.md); ``python -m search.index`` builds the file from that size on (``--ann auto``).
"""

from __future__ import annotations

import math

import numpy as np

# the exact scan is linear in N: 9 ms per query at 100k and 147 ms at 1M on 2 cores (BENCHMARKS.md),
# so from about 200k on it costs more than encoding the query (31 ms, ViT-B/32's text tower)
ANN_MIN_VIDEOS = 200_000
# of sqrt(N) lists; at 1M synthetic vectors: 11.6 ms (12.7x faster than exact), recall@10 0.99 for
# queries near a video and 0.84 for queries as far as CLIP's captions are; 32: 2.9 ms, 0.96 / 0.67
DEFAULT_NPROBE = 128
TRAINING_POINTS_PER_LIST = 64


def _faiss():  # imported when used: exact search and indexing without ANN do not load it
    import faiss

    return faiss


def build_ann(vectors: np.ndarray, seed: int = 0) -> bytes:
    """An IVF-fp16 inner-product index over ``vectors`` (N, D); ids are row numbers. Serialised."""
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    lists = max(1, int(math.sqrt(count)))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, lists, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    sample = min(count, lists * TRAINING_POINTS_PER_LIST)
    chosen = np.random.default_rng(seed).choice(count, size=sample, replace=False) if sample < count else np.arange(count)
    index.train(vectors[np.sort(chosen)])
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
