"""Query-bank normalisations, reported beside (never instead of) the raw scores.

By default both use the whole test set as the bank: each score is rescaled by how strongly its
*target* is claimed by all other queries (a softmax over the query axis, temperature T). With
``--qb-norm-bank SHARDS`` (QB-Norm's own setting) the bank is another split: its captions are the
queries that claim a video (t2v) and its videos those that claim a caption (v2t).
- dual softmax (DSL, CAMoE): s * softmax_queries(s / T)
- inverted softmax (Bogolin et al.): softmax_queries(s / T), ranked as its log
They use test-set statistics at test time, which is why they are kept separate.
The per-target normaliser is accumulated over blocks, so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eval.metrics import ScoreBlock


def _column_logsumexp(text_block: ScoreBlock, num_captions: int, temperature: float, block_size: int) -> torch.Tensor:
    total = None
    for start in range(0, num_captions, block_size):
        part = torch.logsumexp(text_block(start, min(start + block_size, num_captions)).float() / temperature, dim=0)
        total = part if total is None else torch.logaddexp(total, part)
    return total


def _row_logsumexp(text_block: ScoreBlock, num_captions: int, temperature: float, block_size: int) -> torch.Tensor:
    rows = [
        torch.logsumexp(text_block(s, min(s + block_size, num_captions)).float() / temperature, dim=1)
        for s in range(0, num_captions, block_size)
    ]
    return torch.cat(rows)


@dataclass(frozen=True)
class QueryBank:
    """Another split as the bank: ``captions_x_test_videos`` (bank captions x test videos) and
    ``test_captions_x_videos`` (test captions x bank videos), as score blocks over rows."""

    captions_x_test_videos: ScoreBlock
    num_captions: int
    test_captions_x_videos: ScoreBlock


def normalised_blocks(
    text_block: ScoreBlock, video_block: ScoreBlock, num_captions: int, method: str, temperature: float, block_size: int = 1024,
    bank: QueryBank | None = None,
):  # fmt: skip
    """Block functions like the raw ones, with ``method`` in {"dual_softmax", "inverted_softmax"}; ``bank``: the
    normalisers from another split instead of the test queries."""
    if bank is None:
        per_video = _column_logsumexp(text_block, num_captions, temperature, block_size)  # t2v: normalise over captions
        per_caption = _row_logsumexp(text_block, num_captions, temperature, block_size)  # v2t: normalise over videos
    else:
        per_video = _column_logsumexp(bank.captions_x_test_videos, bank.num_captions, temperature, block_size)
        per_caption = _row_logsumexp(bank.test_captions_x_videos, num_captions, temperature, block_size)

    def apply(scores: torch.Tensor, log_norm: torch.Tensor) -> torch.Tensor:
        log_prior = scores.float() / temperature - log_norm.to(scores.device)
        return scores.float() * log_prior.exp() if method == "dual_softmax" else log_prior

    if method not in ("dual_softmax", "inverted_softmax"):
        raise ValueError(f"unknown post-processing {method!r}")
    return (lambda a, b: apply(text_block(a, b), per_video[None, :])), (lambda a, b: apply(video_block(a, b), per_caption[None, :]))
