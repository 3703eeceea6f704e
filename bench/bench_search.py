"""Per-query latency and memory of the search index's first stage at 10k, 100k and 1M videos:
the exact scan (search/searcher.py: float32 vectors in memory, one matrix-vector product and a
top-k) side by side with faiss's IVF over fp16 vectors (search/ann.py) at several ``nprobe``,
with the approximate top 10's recall of the exact top 10; plus the two costs every query pays
whatever the index: encoding the text (ViT-B/32's text tower) and, for models with a fine
stage, DRL's WTI rescoring 50 candidates read from a memory-mapped fp16 frames array.

    python -m bench.bench_search [--sizes 10000 100000 1000000] [--queries 200] [--out bench_out/search.json]

Synthetic vectors (no collection of a million real videos is at hand): unit vectors around
``N / 100`` random centres (clusters of 100 videos, as shots of one topic), and queries that
are noisy copies of random videos (a caption near its video). Recall on real embeddings can
differ: it is measured here, not assumed. Each size runs in a fresh process so that its
resident memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from runtime.cli import HelpFormatter

DIM = 512
NPROBES = (8, 32, 128)


# query noise per dimension: a near-copy of its video (cos ~0.98), and a caption as far from its video
# as CLIP's text-video cosines are (cos(query, its video) ~0.4), where approximate search loses most
QUERY_NOISE = {"near": 0.01, "far": 0.1}


def synthetic(count: int, queries: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, count // 100), DIM), dtype=np.float32)
    vectors = np.empty((count, DIM), dtype=np.float16)
    for start in range(0, count, 100_000):  # in chunks: a million float32 vectors twice over would not be needed
        stop = min(count, start + 100_000)
        chunk = centres[rng.integers(0, len(centres), stop - start)] + 0.8 * rng.standard_normal((stop - start, DIM), dtype=np.float32)
        vectors[start:stop] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    picked = vectors[rng.integers(0, count, queries)].astype(np.float32)
    noisy = picked + noise * rng.standard_normal(picked.shape, dtype=np.float32)
    return vectors, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)


def per_query_ms(function, queries: np.ndarray) -> tuple[float, float, list]:
    function(queries[0])  # warm-up
    times, results = [], []
    for query in queries:
        start = time.perf_counter()
        results.append(function(query))
        times.append(1e3 * (time.perf_counter() - start))
    return float(np.median(times)), float(np.percentile(times, 95)), results


def recall(found: list, truth: list) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(found, truth, strict=True)]))


def one_size(count: int, num_queries: int) -> dict:
    from search.ann import ApproximateSearch, build_ann

    vectors16, near = synthetic(count, num_queries, QUERY_NOISE["near"])
    far = synthetic(count, num_queries, QUERY_NOISE["far"])[1]  # the same vectors (same seed), other queries
    row: dict = {"videos": count, "index_on_disk_MB": vectors16.nbytes / 2**20}
    held = {"exact": torch.from_numpy(vectors16.astype(np.float32))}  # what the exact Searcher holds
    row["exact_resident_MB"] = held["exact"].nbytes / 2**20

    def scan(query: np.ndarray) -> np.ndarray:
        return torch.topk(held["exact"] @ torch.from_numpy(query), 10).indices.numpy()

    row["exact_ms_median"], row["exact_ms_p95"], truth_near = per_query_ms(scan, near)
    truth_far = [scan(query) for query in far]
    start = time.perf_counter()
    serialised = build_ann(held["exact"].numpy())
    row["ann_build_s"] = time.perf_counter() - start
    held.clear()
    ann = ApproximateSearch(serialised)
    row["ann_resident_MB"] = len(serialised) / 2**20  # fp16 codes + ids + centroids: its file is its memory
    for nprobe in NPROBES:
        ann.index.nprobe = nprobe
        median, p95, found = per_query_ms(lambda q: ann.search(q[None], 10)[1][0], near)
        found_far = [ann.search(q[None], 10)[1][0] for q in far]
        row[f"ann{nprobe}"] = {"ms_median": median, "ms_p95": p95, "recall_at_10": recall(found, truth_near),
                               "recall_at_10_far_queries": recall(found_far, truth_far), "speedup_vs_exact": row["exact_ms_median"] / median}  # fmt: skip
    row["process_peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # generation included
    return row


def query_side_costs(num_queries: int) -> dict:
    """Text encoding with ViT-B/32's text tower, and WTI rescoring 50 memory-mapped candidates."""
    import open_clip

    from model import backbone
    from model.features import TextFeatures, VideoFeatures
    from model.interaction import TokenInteraction

    clip = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    tokens = tokenizer(["a man is cooking pasta in a small kitchen"], context_length=32)
    with torch.no_grad():
        encode_ms, _, _ = per_query_ms(lambda _: backbone.encode_text(clip, tokens), np.zeros(num_queries // 4))
        features = backbone.encode_text(clip, tokens)
    text = TextFeatures(torch.nn.functional.normalize(features.pooled, dim=-1), features.tokens, features.mask)
    similarity = TokenInteraction(DIM, weighted=True).eval()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "frames.npy")
        frames = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(100_000, 12, DIM))
        for start in range(0, 100_000, 10_000):
            frames[start : start + 10_000] = rng.standard_normal((10_000, 12, DIM), dtype=np.float32) * 0.05
        frames.flush()
        del frames
        mapped = np.load(path, mmap_mode="r")

        def rescore(_: object) -> torch.Tensor:
            rows = np.sort(rng.choice(100_000, 50, replace=False))
            video = torch.from_numpy(np.asarray(mapped[rows])).float()
            features = VideoFeatures(frames=video, mask=torch.ones(50, 12, dtype=torch.bool), pooled=None)
            with torch.no_grad():
                return similarity.pair_scorer(text, features).block(slice(0, 1), slice(0, 50))

        rerank_ms, rerank_p95, _ = per_query_ms(rescore, np.zeros(num_queries))
    return {"text_encode_ViT-B-32_ms_median": encode_ms, "wti_rerank_50_of_100k_ms_median": rerank_ms, "wti_rerank_50_ms_p95": rerank_p95}


def main() -> None:
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", default="bench_out/search.json")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one size, JSON on stdout
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.one:
        print(json.dumps(one_size(args.one, args.queries)))
        return
    rows = []
    for size in args.sizes:
        child = subprocess.run([sys.executable, "-m", "bench.bench_search", "--one", str(size), "--queries", str(args.queries)],
                               capture_output=True, text=True, check=True)  # fmt: skip
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    result = {"cores": os.cpu_count(), "dim": DIM, "queries": args.queries, "sizes": rows, "query_side": query_side_costs(args.queries)}
    print(json.dumps(result["query_side"]))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"\n{'videos':>9} {'exact ms':>9} {'exact MB':>9} | " + " | ".join(f"nprobe {n}: ms  recall far  x" for n in NPROBES) + " | ann MB  build s")
    for row in rows:
        cells = " | ".join(f"{row[f'ann{n}']['ms_median']:9.2f} {row[f'ann{n}']['recall_at_10']:6.3f} {row[f'ann{n}']['recall_at_10_far_queries']:5.3f} {row[f'ann{n}']['speedup_vs_exact']:5.1f}" for n in NPROBES)
        print(f"{row['videos']:9d} {row['exact_ms_median']:9.2f} {row['exact_resident_MB']:9.0f} | {cells} | {row['ann_resident_MB']:6.0f} {row['ann_build_s']:7.1f}")


if __name__ == "__main__":
    main()
