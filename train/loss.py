"""Symmetric InfoNCE over a (texts x videos) logit matrix whose diagonal holds the pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean of text->video and video->text cross entropy (CLIP4Clip's CrossEn, both ways)."""
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
