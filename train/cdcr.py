"""DRL's channel decorrelation regularisation (CDCR), an optional extra loss term.

Token interaction matches each caption token with its best frame (and each frame with its
best token). CDCR looks at those matched pairs of the *positive* (caption, video) pairs and
asks the D feature channels to agree one to one: after standardising every channel over the
matched pairs, the weighted D x D cross-correlation should have ones on its diagonal
(a1 term) and, optionally, zeros elsewhere (a2 term). DRL's defaults are a1 = 0.11, a2 = 0,
added to the contrastive loss with weight 0.001.

Each matched pair counts with the interaction weight of its token (or frame), so padding and
words WTI learnt to ignore do not drive the regulariser.
"""

from __future__ import annotations

import torch

from model.features import TokenSet


def _best_partner(queries: TokenSet, partners: TokenSet) -> torch.Tensor:
    """(B, S, D) features of each query position's most similar real partner position."""
    similarity = queries.features @ partners.features.transpose(-1, -2)
    best = similarity.masked_fill(~partners.mask.unsqueeze(-2), float("-inf")).argmax(-1)  # (B, S)
    return torch.gather(partners.features, 1, best.unsqueeze(-1).expand(-1, -1, partners.features.shape[-1]))


def _standardise(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    mean = (weights[:, None] * values).sum(0)
    variance = (weights[:, None] * (values - mean) ** 2).sum(0)
    return (values - mean) / (variance + 1e-6).sqrt()


def channel_decorrelation_loss(text: TokenSet, video: TokenSet, alpha_diagonal: float = 0.11, alpha_off: float = 0.0) -> torch.Tensor:
    """CDCR over the matched token pairs of B positive pairs (row i of ``text`` with row i of ``video``)."""
    text_side = torch.cat([text.features, _best_partner(video, text)], dim=1)  # tokens, then frames' best tokens
    video_side = torch.cat([_best_partner(text, video), video.features], dim=1)
    weights = torch.cat([text.weights, video.weights], dim=1)  # each row's two halves sum to 1 each
    width = text_side.shape[-1]
    weights = (weights / weights.sum()).reshape(-1)
    x = _standardise(text_side.reshape(-1, width), weights)
    y = _standardise(video_side.reshape(-1, width), weights)
    correlation = (weights[:, None] * x).T @ y  # (D, D)
    diagonal = torch.diagonal(correlation)
    off_diagonal = correlation.pow(2).sum() - diagonal.pow(2).sum()
    return alpha_diagonal * (1 - diagonal).pow(2).sum() + alpha_off * off_diagonal
