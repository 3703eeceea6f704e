"""A method of one's own, in one file outside model/: max-pooling over frames (docs/adding-a-method.md).

The video vector is the channel-wise max of the head's frame features over the clip's real frames
(instead of CLIP4Clip's mean), scored by cosine with the caption; a loss term pulls the max-pooled
vector of each clip towards its mean-pooled one (``--max-pool-agreement``), so the coarse search
stage (the mean) and this fine one agree. ``python -m train --methods-from tests.plugin_max_pool
--max-pool`` trains it; eval, search.index and search read ``--methods-from`` back from the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from model.features import TextFeatures, VideoFeatures
from model.methods.registry import Method, register
from model.options import option
from model.similarity import DEFAULT_CHUNKS, PairScorer, ScoringChunks, Similarity, TrainingScores, VectorPairs


@dataclass(kw_only=True)
class MaxPoolOptions:
    max_pool: bool = option(False, "score with the max over frames instead of the mean (needs a loose head and the cosine)")
    max_pool_agreement: float = option(0.5, "weight of the loss term that pulls each clip's max-pooled vector towards its mean")


def max_pooled(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D) frame features, (B, T) real frames -> (B, D) normalised channel-wise max over real frames."""
    return F.normalize(frames.float().masked_fill(~mask[..., None], float("-inf")).amax(dim=1), dim=-1)


class MaxPoolCosine(Similarity):
    reads_frames = True  # a fine stage: the index keeps frame features and search rescores its top candidates

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: torch.Tensor) -> TrainingScores:
        return TrainingScores(logit_scale * text.pooled.float() @ max_pooled(video.frames, video.mask).T)

    def pair_scorer(self, text: TextFeatures, video: VideoFeatures, chunks: ScoringChunks = DEFAULT_CHUNKS) -> PairScorer:
        return VectorPairs(text.pooled.float(), max_pooled(video.frames, video.mask))


@register
class MaxPool(Method):
    name = "max-pool"
    title = "Max-pooling over frames (an example plug-in)"
    reference = "tests/plugin_max_pool.py; docs/adding-a-method.md"
    options = MaxPoolOptions
    architecture_options = ("max_pool",)

    def is_active(self, config: Any) -> bool:
        return config.max_pool

    def problem(self, config: Any) -> str | None:
        if config.sim_header == "tightTransf" or config.interaction != "cosine" or config.emcl or config.eercf:
            return "--max-pool is its own similarity: use it with meanP, seqLSTM or seqTransf and no other similarity"
        if config.max_pool_agreement < 0:
            return "--max-pool-agreement must be at least 0"
        return None

    def trains_fine_similarity(self, config: Any) -> bool:
        return True

    def similarity(self, config: Any, clip: Any, width: int) -> Similarity:
        return MaxPoolCosine()

    def loss_terms(self, model: Any, text: TextFeatures, video: VideoFeatures, scores: TrainingScores, config: Any) -> list:
        agreement = (max_pooled(video.frames, video.mask) - F.normalize(video.pooled.float(), dim=-1)).pow(2).sum(-1).mean()
        return [("agreement", config.max_pool_agreement, agreement)]
