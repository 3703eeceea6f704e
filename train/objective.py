"""The training objective of every method: one contrastive loss plus optional terms.

- the symmetric cross entropy over the model's similarity (the active method's, or the cosine);
- whatever a similarity with its own objective asks for (EERCF: weak/strong contrastive terms
  with its weights and its Pearson constraints, model/eercf.py);
- ``coarse_weight`` x the same loss over the cheap pooled cosine, so that a model with a fine
  similarity also has a trained first stage for EERCF's coarse-to-fine retrieval;
- each active method's own terms (``Method.loss_terms``: DRL's channel decorrelation).
"""

from __future__ import annotations

import torch

from model.clip4clip import CLIP4Clip
from model.features import TextFeatures, VideoFeatures
from train.loss import symmetric_cross_entropy
from train.options import LossOptions


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
    for method in config.active_methods():
        for name, weight, value in method.loss_terms(model, text, video, scores, config):
            parts[name] = value
            loss = loss + weight * value
    return loss, {name: value.detach() for name, value in parts.items()}
