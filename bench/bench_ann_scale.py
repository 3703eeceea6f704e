"""The first stage at a million videos on one core: exact scan, the IVF index search.index built
before (sqrt(N) lists), the tuned one it builds now (4 sqrt(N) lists), and an HNSW graph, side by side in one run on the same vectors and queries.

    python -m bench.bench_ann_scale [--videos 1000000] [--queries 200] [--out bench_out/ann_scale.json]

For each index: the median and p95 milliseconds per query with one thread (faiss's OpenMP and
torch both pinned to one), the recall of the exact top 10 for queries near their video and for
queries as far from it as CLIP's captions are (bench/bench_search.py's synthetic vectors, the same
generator and seed), the index's size in memory (its serialised bytes: codes, ids, graph links,
centroids) and how long it took to build with every core. The exact truth is the float32 scan.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

from bench.bench_search import QUERY_NOISE, per_query_ms, recall, synthetic
from runtime.cli import HelpFormatter

IVF_NPROBES = (16, 32, 64, 128)
HNSW_EF = (32, 64, 128, 256)


def measure(name: str, search, near: np.ndarray, far: np.ndarray, truth_near: list, truth_far: list, extra: dict) -> dict:  # noqa: ANN001
    median, p95, found = per_query_ms(search, near)
    found_far = [search(query) for query in far]
    row = {"index": name, "ms_median": median, "ms_p95": p95, "recall_at_10_near": recall(found, truth_near),
           "recall_at_10_far": recall(found_far, truth_far), **extra}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    import faiss

    from search.ann import build_ann, build_hnsw

    parser = argparse.ArgumentParser(formatter_class=HelpFormatter, description=__doc__)
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", default="bench_out/ann_scale.json")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    vectors16, near = synthetic(args.videos, args.queries, QUERY_NOISE["near"])
    far = synthetic(args.videos, args.queries, QUERY_NOISE["far"])[1]
    vectors = vectors16.astype(np.float32)
    held = torch.from_numpy(vectors)
    torch.set_num_threads(cores)
    truth_near = [torch.topk(held @ torch.from_numpy(q), 10).indices.numpy() for q in near]
    truth_far = [torch.topk(held @ torch.from_numpy(q), 10).indices.numpy() for q in far]
    rows = []
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rows.append(measure("exact float32 scan", lambda q: torch.topk(held @ torch.from_numpy(q), 10).indices.numpy(), near, far, truth_near,
                        truth_far, {"memory_MB": vectors.nbytes / 2**20, "build_s": 0.0}))  # fmt: skip

    def faiss_rows(name: str, serialised: bytes, build_s: float, knob: str, values: tuple[int, ...]) -> None:
        index = faiss.deserialize_index(np.frombuffer(serialised, dtype=np.uint8))
        for value in values:
            if knob == "nprobe":
                index.nprobe = value
            else:
                index.hnsw.efSearch = value
            rows.append(measure(f"{name}, {knob} {value}", lambda q: index.search(q[None], 10)[1][0], near, far, truth_near, truth_far,
                                {"memory_MB": len(serialised) / 2**20, "build_s": build_s}))  # fmt: skip

    for name, builder, knob, values in (
        ("IVF sqrt(N) lists, fp16 (search.index before)", lambda: build_ann(vectors, lists=int(math.sqrt(len(vectors)))), "nprobe", (32, 128)),
        ("IVF 4 sqrt(N) lists, fp16 (search.index now)", lambda: build_ann(vectors), "nprobe", IVF_NPROBES),
        ("HNSW M 32, fp16", lambda: build_hnsw(vectors), "efSearch", HNSW_EF),
    ):
        faiss.omp_set_num_threads(cores)  # building uses every core; searching is timed on one
        started = time.perf_counter()
        serialised = builder()
        build_s = time.perf_counter() - started
        print(f"built {name} in {build_s:.0f} s", flush=True)
        faiss.omp_set_num_threads(1)
        faiss_rows(name, serialised, build_s, knob, values)
    result = {"videos": args.videos, "dim": vectors.shape[1], "queries": args.queries, "cores": cores, "query_threads": 1, "rows": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"\n{'index':52} {'ms/query':>9} {'p95':>7} {'recall near':>12} {'recall far':>11} {'memory MB':>10} {'build s':>8}")
    for row in rows:
        print(f"{row['index']:52} {row['ms_median']:9.2f} {row['ms_p95']:7.2f} {row['recall_at_10_near']:12.3f} {row['recall_at_10_far']:11.3f} "
              f"{row['memory_MB']:10.0f} {row['build_s']:8.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
