"""EERCF's coarse-to-fine scoring vs scoring every video with the fine similarity.

Fine similarity (``--method``): DRL's weighted token interaction (``wti``), X-Pool's text-conditioned
pooling (``xpool``) or T-MASS's best of 20 stochastic texts on it (``tmass``), at ViT-B/32 sizes
(D = 512, 32 caption tokens, 12 frames), with an untrained model's own weights (random
initialisation: the cost does not depend on the weights; X-Pool's and T-MASS's start at the identity). Both sides go through the evaluator's own code
(eval/scoring.py SplitScorer, eval/rerank.py), text-to-video, the same queries, one run.

The features are synthetic but structured so that ranks mean something: each video is up to
12 frame vectors around a weak latent per video; its caption has 4 tokens that are very noisy
copies of some of its frames, the rest filler words. The coarse stage (caption mean vs frame mean) then finds the
right video often but not always, and the fine stage (token-to-frame maxima) more often. The
accuracy numbers are about these features, not a dataset; the README table has results of
trained models on generated videos.

    python -m bench.bench_rerank [--method wti|xpool|tmass] [--sizes 1000 10000] [--queries 1000] [--topk 50 200] [--device cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import partial

import open_clip
import torch
import torch.nn.functional as F

from eval.encode import EncodedSplit
from eval.metrics import summarize, t2v_ranks
from eval.rerank import two_stage_blocks
from eval.scoring import SplitScorer
from model.clip4clip import CLIP4Clip
from model.config import ModelConfig
from model.heads import masked_mean_pool
from runtime.cli import HelpFormatter

METHOD_OPTIONS = {"wti": {"interaction": "wti"}, "xpool": {"xpool": True}, "tmass": {"tmass": True, "tmass_trials": 20}}


def fine_model(method: str = "wti") -> CLIP4Clip:
    """An untrained ViT-B/32 model whose similarity is the method's (D = 512): the scorer uses its own weights."""
    return CLIP4Clip(open_clip.create_model("ViT-B-32"), ModelConfig(sim_header="meanP", max_frames=12, **METHOD_OPTIONS[method])).eval()


def synthetic_split(num_videos: int, num_queries: int, width: int = 512, frames: int = 12, words: int = 32, seed: int = 0) -> EncodedSplit:
    """Videos: 12 frames around a weak per-video latent, 4 to 12 real frames. Captions: 4
    tokens that are very noisy copies of some of the video's frames, the rest drawn from 64
    shared filler vectors (words like "a", "the"), 6 to 32 real tokens."""
    generator = torch.Generator().manual_seed(seed)
    latent = 0.25 * torch.randn(num_videos, 1, width, generator=generator)
    video_frames = latent + torch.randn(num_videos, frames, width, generator=generator)
    lengths = torch.randint(4, frames + 1, (num_videos,), generator=generator)
    mask = torch.arange(frames)[None] < lengths[:, None]
    queried = torch.randperm(num_videos, generator=generator)[:num_queries].sort().values
    filler = torch.randn(64, width, generator=generator)
    tokens = filler[torch.randint(0, 64, (num_queries, words), generator=generator)]
    described = torch.randint(0, 1 << 30, (num_queries, 4), generator=generator) % lengths[queried, None]
    tokens[:, 1:5] = video_frames[queried[:, None], described] + 6.0 * torch.randn(num_queries, 4, width, generator=generator)
    token_mask = torch.arange(words)[None] < torch.randint(6, words + 1, (num_queries, 1), generator=generator)
    text = F.normalize((tokens * token_mask[..., None]).sum(1), dim=-1)
    return EncodedSplit(
        keys=[f"v{i}" for i in range(num_videos)],
        captions=[f"c{i}" for i in range(num_queries)],
        caption_to_video=queried,
        text=text,
        text_tokens=tokens,
        text_mask=token_mask,
        video_pooled=masked_mean_pool(video_frames, mask),
        video_frames=video_frames,
        video_mask=mask,
        skipped={},
    )


def score_rows(score, videos: slice, first: int, last: int) -> torch.Tensor:
    return score(slice(first, last), videos)


def timed(block, caption_to_video: torch.Tensor, device: torch.device, repeats: int) -> tuple[dict, float]:
    """Metrics and the median wall time of ``repeats`` runs (this 2-core machine is noisy)."""
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        ranks = t2v_ranks(block, caption_to_video, block_size=256)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return summarize(ranks), statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--method", choices=sorted(METHOD_OPTIONS), default="wti", help="the fine similarity")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--queries", type=int, default=1000, help="text queries per size (all of them scored against every video)")
    parser.add_argument(
        "--topk", type=int, nargs="+", default=[50, 200], help="EERCF candidates; each value is timed against the same fine run"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method; the median is reported")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = fine_model(args.method).to(device)
    for size in args.sizes:
        split = synthetic_split(size, min(args.queries, size))
        scorer = SplitScorer(model, split, device)
        fine_all = partial(score_rows, scorer.fine, slice(0, size))
        coarse_only = partial(score_rows, scorer.coarse, slice(0, size))
        fine_metrics, fine_seconds = timed(fine_all, split.caption_to_video, device, args.repeats)
        coarse_metrics, coarse_seconds = timed(coarse_only, split.caption_to_video, device, args.repeats)
        result = {
            "method": args.method, "videos": size, "queries": len(split.captions), "device": str(device),
            "fine_all": {"seconds": round(fine_seconds, 3), **fine_metrics},
            "coarse_only": {"seconds": round(coarse_seconds, 3), **coarse_metrics},
        }  # fmt: skip
        for topk in args.topk:
            staged_metrics, staged_seconds = timed(two_stage_blocks(scorer, topk)[0], split.caption_to_video, device, args.repeats)
            result[f"two_stage_k{topk}"] = {
                "seconds": round(staged_seconds, 3),
                **staged_metrics,
                "speedup": round(fine_seconds / staged_seconds, 1),
            }
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
