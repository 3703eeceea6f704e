"""The training objective of every method: one contrastive loss plus optional terms.

- the symmetric cross entropy over the model's similarity (cosine, EMCL, WTI/TI or tight);
- ``coarse_weight`` x the same loss over the cheap pooled cosine, so that a model with a fine
  similarity also has a trained first stage for EERCF's coarse-to-fine retrieval;
- ``cdcr_weight`` x DRL's channel decorrelation over matched token pairs;
- whatever a similarity with its own objective asks for (EERCF: weak/strong contrastive terms
  with its weights and its Pearson constraints, model/eercf.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.clip4clip import CLIP4Clip
from model.config import option
from model.features import TextFeatures, VideoFeatures
from train.cdcr import channel_decorrelation_loss
from train.loss import symmetric_cross_entropy


@dataclass(kw_only=True)
class LossOptions:
    """The loss terms' flags (``TrainConfig`` extends this class)."""

    # DRL's regulariser of token interaction
    cdcr_weight: float = option(0.0, "DRL's channel decorrelation loss weight (DRL uses 0.001; needs --interaction wti/ti)")
    cdcr_alpha1: float = option(0.11, "CDCR's weight of the diagonal term")
    cdcr_alpha2: float = option(0.0, "CDCR's weight of the off-diagonal term")
    # EERCF: train the cheap video-level cosine next to the fine similarity (two-stage retrieval)
    coarse_weight: float = option(
        0.0, "weight of a pooled-cosine loss added to a fine similarity's, so EERCF's first stage is trained (e.g. 1.0)"
    )


def retrieval_loss(
    model: CLIP4Clip, text: TextFeatures, video: VideoFeatures, config: LossOptions
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (as floats, for the log). Inputs are the gathered global batch."""
    scores = model.similarity(text, video, model.logit_scale())
    contrastive = symmetric_cross_entropy(scores.logits.float())
    parts = {"contrastive": contrastive}
    loss = scores.logits_weight * contrastive
    for name, weight, logits in scores.extra_logits:  # a similarity's own extra contrastive terms (EERCF's strong logits)
        parts[name] = symmetric_cross_entropy(logits.float())
        loss = loss + weight * parts[name]
    for name, weight, value in scores.regularisers:  # and its own regularisers (EERCF's Pearson constraints)
        parts[name] = value
        loss = loss + weight * value
    if config.coarse_weight:
        coarse = symmetric_cross_entropy((model.logit_scale() * model.coarse_similarity(text.pooled, video)).float())
        parts["coarse"] = coarse
        loss = loss + config.coarse_weight * coarse
    if config.cdcr_weight:
        cdcr = channel_decorrelation_loss(*scores.token_sides, config.cdcr_alpha1, config.cdcr_alpha2)  # config: token interaction
        parts["cdcr"] = cdcr
        loss = loss + config.cdcr_weight * cdcr
    return loss, {name: value.detach() for name, value in parts.items()}
