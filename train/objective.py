"""The training objective of every method: one contrastive loss plus optional terms.

- the symmetric cross entropy over the model's similarity (cosine, EMCL, WTI/TI or tight);
- ``coarse_weight`` x the same loss over the cheap pooled cosine, so that a model with a fine
  similarity also has a trained first stage for EERCF's coarse-to-fine retrieval;
- ``cdcr_weight`` x DRL's channel decorrelation over matched token pairs.
"""

from __future__ import annotations

import torch

from model.clip4clip import CLIP4Clip
from model.features import TextFeatures, VideoFeatures
from train.cdcr import channel_decorrelation_loss
from train.config import TrainConfig
from train.loss import symmetric_cross_entropy


def retrieval_loss(
    model: CLIP4Clip, text: TextFeatures, video: VideoFeatures, config: TrainConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts (as floats, for the log). Inputs are the gathered global batch."""
    scores = model.similarity(text, video, model.logit_scale())
    loss = symmetric_cross_entropy(scores.logits.float())
    parts = {"contrastive": loss}
    if config.coarse_weight:
        coarse = symmetric_cross_entropy((model.logit_scale() * model.coarse_similarity(text.pooled, video)).float())
        parts["coarse"] = coarse
        loss = loss + config.coarse_weight * coarse
    if config.cdcr_weight:
        cdcr = channel_decorrelation_loss(*scores.token_sides, config.cdcr_alpha1, config.cdcr_alpha2)  # config: token interaction
        parts["cdcr"] = cdcr
        loss = loss + config.cdcr_weight * cdcr
    return loss, {name: value.detach() for name, value in parts.items()}
