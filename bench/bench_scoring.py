"""Scoring time and peak memory: blockwise ranks (eval/metrics.py) vs a dense numpy argsort.

Baseline (CLIP4Clip's way): build the full N x N similarity matrix, argsort every row,
find the ground truth's position. Ours: (block x N) scores at a time, rank = count of
strictly higher scores. Both start from the same L2-normalised float32 features (D = 512),
so the time includes the matrix products. Peak memory is measured per run in a fresh
subprocess (ru_maxrss) minus the features themselves, so one run cannot inflate the other.

    python -m bench.bench_scoring [--sizes 1000 10000 100000] [--dense-max 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from runtime.cli import HelpFormatter


def features(n: int, dim: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    videos = rng.standard_normal((n, dim), dtype=np.float32)
    texts = videos + 12.0 * rng.standard_normal((n, dim), dtype=np.float32)  # weakly correlated pairs: non-trivial ranks
    for matrix in (videos, texts):
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return texts, videos


def dense(texts: np.ndarray, videos: np.ndarray) -> np.ndarray:
    sim = texts @ videos.T
    order = np.argsort(-sim, axis=1)
    return np.argmax(order == np.arange(len(sim))[:, None], axis=1)


def blockwise(texts: np.ndarray, videos: np.ndarray, block: int, device: str = "cpu") -> np.ndarray:
    from eval.metrics import t2v_ranks

    t, v = torch.from_numpy(texts).to(device), torch.from_numpy(videos).to(device)
    ranks = t2v_ranks(lambda a, b: t[a:b] @ v.T, torch.arange(len(t)), block)
    if device != "cpu":
        torch.cuda.synchronize()
    return ranks


def one_run(method: str, n: int, block: int, device: str) -> dict:
    texts, videos = features(n)
    if device != "cpu":  # warm up CUDA outside the timed region
        blockwise(texts[:8], videos[:8], block, device)
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    ranks = dense(texts, videos) if method == "dense" else blockwise(texts, videos, block, device)
    seconds = time.perf_counter() - start
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    result = {
        "method": method,
        "device": "cpu" if method == "dense" else device,
        "n": n,
        "seconds": seconds,
        "extra_peak_mib": peak_mib,
        "mean_rank": float(np.mean(ranks)),
        "r1": float(np.mean(ranks == 0) * 100),
    }
    if device != "cpu" and method != "dense":
        result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--dense-max", type=int, default=20000, help="largest N the dense baseline is run at (memory)")
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--device", default="cpu", help="where the blockwise scoring runs (cpu or cuda); the dense baseline is numpy")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_run(args.child[0], int(args.child[1]), args.block, args.device)))
        return
    results = []
    for n in args.sizes:
        for method in ("dense", "blockwise"):
            if method == "dense" and n > args.dense_max:
                results.append(
                    {"method": "dense", "n": n, "skipped": f"needs about {n * n * 12 / 2**30:.0f} GiB (float32 scores + int64 argsort)"}
                )
                continue
            out = subprocess.run([sys.executable, "-m", "bench.bench_scoring", "--block", str(args.block), "--device", args.device, "--child", method, str(n)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            results.append(json.loads(out.stdout))
            print(json.dumps(results[-1]), flush=True)
    by = {(r["method"], r["n"]): r for r in results}
    for n in args.sizes:
        d, b = by[("dense", n)], by[("blockwise", n)]
        if "seconds" in d:
            # same ranks; on a GPU a different summation order may flip a near-tie or two
            assert abs(d["mean_rank"] - b["mean_rank"]) <= (1e-6 if b["device"] == "cpu" else 1e-3), "both methods must give the same ranks"
            b["speedup_vs_dense"] = d["seconds"] / b["seconds"]
            b["memory_ratio_vs_dense"] = d["extra_peak_mib"] / max(b["extra_peak_mib"], 1e-9)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
