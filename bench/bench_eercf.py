"""EERCF's patch-level index: its memory, and two-stage search vs fine scoring of every video.

ViT-B/32 sizes: D = 512, 12 frames, 49 patches per frame. Per video the index holds the pooled
vector, the seqTransf outputs and CLIP's frame features (fp32) and, for the patch level, 588
patch tokens (fp16, as eval/encode.py keeps them). Memory: the bytes of those tensors for a
10k-video gallery, allocated here, with and without the patches.

Speed: ``--queries`` captions scored against galleries of each ``--sizes`` with the evaluator's
own EERCF scorer (model/eercf.py EERCFPairs): fine on every video (blockwise) vs the two stages
(video-level score over all, the top ``--topk`` rescored). Features are synthetic (random,
normalised, per video from a seed of its id): the cost does not depend on their values. A
gallery too large to hold here (100k videos x 588 patches = 60 GB) is generated chunk by chunk;
only the scoring calls are timed, never the generation.

    python -m bench.bench_eercf [--sizes 1000 10000 100000] [--queries 32] [--topk 50]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from model.eercf import EERCFSimilarity
from model.features import TextFeatures, VideoFeatures
from model.similarity import ScoringChunks
from runtime.cli import HelpFormatter

WIDTH, FRAMES, PATCHES = 512, 12, 49
CHUNK = 1000  # videos generated (and fine-scored) at a time


def videos(start: int, stop: int) -> VideoFeatures:
    """Deterministic synthetic features of videos start..stop-1 (seeded by the first id)."""
    generator = torch.Generator().manual_seed(start)
    count = stop - start
    frames = F.normalize(torch.randn(count, FRAMES, WIDTH, generator=generator), dim=-1)
    sequence = F.normalize(frames + 0.1 * torch.randn(count, FRAMES, WIDTH, generator=generator), dim=-1)
    patches = F.normalize(torch.randn(count, FRAMES, PATCHES, WIDTH, generator=generator), dim=-1).half()
    mask = torch.ones(count, FRAMES, dtype=torch.bool)
    return VideoFeatures(frames=sequence, mask=mask, pooled=F.normalize(sequence.mean(1), dim=-1), clip_frames=frames, patches=patches)


def index_bytes(features: VideoFeatures) -> dict[str, int]:
    without = sum(t.nbytes for t in (features.pooled, features.frames, features.clip_frames, features.mask))
    return {"without_patches": without, "with_patches": without + features.patches.nbytes}


def timed(fn) -> tuple[object, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(similarity: EERCFSimilarity, text: torch.Tensor, size: int, topk: int) -> dict:
    queries = TextFeatures(text)
    fine_seconds, coarse_parts = 0.0, []
    for start in range(0, size, CHUNK):  # fine on every video, chunk by chunk (generation not timed)
        chunk = videos(start, min(size, start + CHUNK))
        pairs = similarity.pair_scorer(queries, chunk, ScoringChunks(64, 256))
        _, seconds = timed(lambda pairs=pairs, n=chunk.mask.shape[0]: pairs.block(slice(0, text.shape[0]), slice(0, n)))
        fine_seconds += seconds
        coarse_parts.append(chunk.pooled)
    pooled = torch.cat(coarse_parts)
    # two stages: the video-level score over all, then the top k rescored (only the candidates' features are needed)
    (top, coarse_seconds) = timed(lambda: (similarity.coarse_text(text) @ pooled.T).topk(topk, dim=1).indices)
    # the candidates' features, as an index would hand them over (drawn like the others: the
    # rerank cost does not depend on their values)
    needed = sorted(set(top.flatten().tolist()))
    candidates = videos(0, len(needed))
    position = {v: i for i, v in enumerate(needed)}
    local = torch.tensor([[position[v] for v in row] for row in top.tolist()])
    pairs = similarity.pair_scorer(queries, candidates)
    _, rerank_seconds = timed(lambda: pairs.for_texts(torch.arange(text.shape[0]), local))
    two_stage = coarse_seconds + rerank_seconds
    return {"videos": size, "queries": text.shape[0], "topk": topk, "fine_all_s": fine_seconds, "two_stage_s": two_stage,
            "coarse_s": coarse_seconds, "rerank_s": rerank_seconds, "speedup": fine_seconds / two_stage}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--topk", type=int, default=50)
    parser.add_argument("--memory-gallery", type=int, default=10000)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    similarity = EERCFSimilarity(WIDTH, FRAMES).eval()
    memory = index_bytes(videos(0, args.memory_gallery))
    report = {"memory_gallery_videos": args.memory_gallery, "index_bytes": memory,
              "patch_factor": memory["with_patches"] / memory["without_patches"], "speed": []}  # fmt: skip
    text = F.normalize(torch.randn(args.queries, WIDTH, generator=torch.Generator().manual_seed(7)), dim=-1)
    with torch.no_grad():
        for size in args.sizes:
            report["speed"].append(measure(similarity, text, size, args.topk))
            print(json.dumps(report["speed"][-1]), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
