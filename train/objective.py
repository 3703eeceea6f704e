"""The training objective of every method: one contrastive loss plus optional terms.

- the symmetric cross entropy over the model's similarity (cosine, EMCL, WTI/TI or tight);
- ``coarse_weight`` x the same loss over the cheap pooled cosine, so that a model with a fine
  similarity also has a trained first stage for EERCF's coarse-to-fine retrieval;
- ``cdcr_weight`` x DRL's channel decorrelation (``--cdcr`` picks DRL's variant, train/cdcr.py);
- whatever a similarity with its own objective asks for (EERCF: weak/strong contrastive terms
  with its weights and its Pearson constraints, model/eercf.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.clip4clip import CLIP4Clip
from model.config import option
from model.features import TextFeatures, VideoFeatures
from train.cdcr import CDCR_MODES, pooled_cdcr, token_cdcr
from train.loss import symmetric_cross_entropy


@dataclass(kw_only=True)
class LossOptions:
    """The loss terms' flags (``TrainConfig`` extends this class)."""

    # DRL's channel decorrelation regulariser (train/cdcr.py)
    cdcr: int = option(0, "DRL's --cdcr: 0 off; with --interaction cosine any other value decorrelates the pooled vectors (DRL's dp); "
                       "with ti/wti 1: a random token and frame per pair, 2: matched tokens and frames, 3: the same weighted by WTI",
                       CDCR_MODES)  # fmt: skip
    cdcr_weight: float = option(0.001, "DRL's --cdcr_lambda: weight of the CDCR term in the loss")
    cdcr_alpha1: float = option(1.0, "DRL's --cdcr_alpha1: weight of the diagonal term (its main.py default; msrvtt.sh sets 0.11-0.16)")
    cdcr_alpha2: float = option(0.06, "DRL's --cdcr_alpha2: weight of the off-diagonal term (its main.py default; msrvtt.sh sets 0)")
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
    if config.cdcr:
        if scores.token_sides is not None:
            cdcr = token_cdcr(*scores.token_sides, config.cdcr, config.cdcr_alpha1, config.cdcr_alpha2)
        else:  # DRL's dp_interaction: the normalised pooled vectors
            cdcr = pooled_cdcr(F.normalize(text.pooled.float(), dim=-1), video.pooled.float(), config.cdcr_alpha1, config.cdcr_alpha2)
        parts["cdcr"] = cdcr
        loss = loss + config.cdcr_weight * cdcr
    return loss, {name: value.detach() for name, value in parts.items()}
