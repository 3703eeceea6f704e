"""EERCF's coarse-to-fine retrieval: rank everything cheaply, rescore only the top k finely.

Stage one ranks every candidate by the cosine of the caption vector and a text-agnostic video
vector (one matrix product). Stage two rescores each query's top k candidates with the
model's fine similarity (DRL's token interaction or the tightTransf cross encoder), whose
cost grows with the number of pairs it sees: k per query instead of every candidate.
Reranked candidates stay above all others (ordered by their fine score); the rest keep their
coarse order, so ranks beyond k, hence MnR, are still defined.

``k >= candidates`` is exactly the fine-only ranking (the fine scores are returned as they
are). For smaller k the row is held in float64 with the fine scores lifted above the coarse
maximum, which keeps both orders intact.

Both directions: text-to-video picks the top k videos per caption; video-to-text picks the
top k captions per video and then applies the usual multi-caption max.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from eval.metrics import summarize, t2v_ranks, v2t_ranks
from eval.scoring import SplitScorer, fine_blocks


def _two_stage_rows(coarse: torch.Tensor, topk: int, fine_pairs) -> torch.Tensor:
    """Rows of coarse scores with each row's top-k candidates replaced by lifted fine scores."""
    top = coarse.topk(topk, dim=1).indices  # (rows, k)
    fine = fine_pairs(top).double()
    rows = coarse.double()
    lift = rows.amax(dim=1, keepdim=True) - fine.amin(dim=1, keepdim=True) + 1.0
    return rows.scatter(1, top, fine + lift)


def two_stage_blocks(scorer: SplitScorer, topk: int):
    """Block functions like ``score_blocks``, scoring with EERCF's two stages."""
    every_video, every_text = slice(0, scorer.num_videos), slice(0, scorer.num_texts)

    def text_block(a: int, b: int) -> torch.Tensor:
        if topk >= scorer.num_videos:
            return scorer.fine(slice(a, b), every_video)
        texts = torch.arange(a, b, device=scorer.device)
        return _two_stage_rows(scorer.coarse(slice(a, b), every_video), topk, lambda top: scorer.fine_for_texts(texts, top))

    def video_block(a: int, b: int) -> torch.Tensor:
        if topk >= scorer.num_texts:
            return scorer.fine(every_text, slice(a, b)).T
        videos = torch.arange(a, b, device=scorer.device)
        return _two_stage_rows(scorer.coarse(every_text, slice(a, b)).T, topk, lambda top: scorer.fine_for_videos(videos, top))

    return text_block, video_block


def _timed_ranks(
    text_block, video_block, caption_to_video: torch.Tensor, num_videos: int, block_size: int, device: torch.device
) -> tuple[dict, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    t2v = t2v_ranks(text_block, caption_to_video, block_size)
    v2t = v2t_ranks(video_block, caption_to_video, num_videos, block_size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"t2v": summarize(t2v), "v2t": summarize(v2t), "t2v_ranks": t2v}, time.perf_counter() - start


def compare_coarse_to_fine(scorer: SplitScorer, caption_to_video: torch.Tensor, topk: int, block_size: int = 1024) -> dict:
    """Accuracy and measured scoring time of coarse only, fine on every pair, and two-stage."""
    every_video, every_text = slice(0, scorer.num_videos), slice(0, scorer.num_texts)
    stages = {
        "coarse_only": (lambda a, b: scorer.coarse(slice(a, b), every_video), lambda a, b: scorer.coarse(every_text, slice(a, b)).T),
        "fine_all": fine_blocks(scorer),
        "two_stage": two_stage_blocks(scorer, topk),
    }
    result: dict = {"topk": topk}
    for name, (text_block, video_block) in stages.items():
        metrics, seconds = _timed_ranks(text_block, video_block, caption_to_video, scorer.num_videos, block_size, scorer.device)
        result[name] = {"t2v": metrics["t2v"], "v2t": metrics["v2t"], "seconds": seconds}
        result[name]["_t2v_ranks"] = metrics["t2v_ranks"]
    result["speedup_vs_fine_all"] = result["fine_all"]["seconds"] / max(result["two_stage"]["seconds"], 1e-9)
    agree = np.mean(result["two_stage"]["_t2v_ranks"] == result["fine_all"]["_t2v_ranks"])
    result["t2v_rank_agreement_with_fine_all"] = float(agree)
    for name in stages:
        del result[name]["_t2v_ranks"]
    return result
