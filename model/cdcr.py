"""DRL's channel decorrelation regularisation (CDCR), as its code computes it (``tvr/models/modeling.py``).

Over the B positive (caption, video) pairs of the batch, two sets of D-channel features are
standardised per channel (mean and unbiased std over the rows), their D x D cross-correlation
``c`` is formed, and the loss is ``alpha1 * sum_i (c_ii - 1)^2 + alpha2 * sum_{i != j} c_ij^2``,
added with weight ``--cdcr-weight`` (DRL's ``--cdcr_lambda``). Which features, by DRL's ``--cdcr``:

- with ``--interaction cosine`` (DRL's ``dp``), any non-zero mode: the pooled text vector against
  the pooled video vector (``dp_interaction``);
- ``1``: one random real token against one random real frame per pair;
- ``2``: each real token against its best frame and each real frame against its best token (the
  maxima of cosines multiplied by both masks, as DRL's, so a padded slot scores 0), the two
  correlations (each divided by its number of rows) averaged;
- ``3``: as 2, each row weighted by WTI's weight of its token / frame, both divided by B.

One deliberate difference: a channel that is constant over the rows gives DRL a 0 / 0 (NaN loss);
here it standardises to 0 (see ``_standardise``).
"""

from __future__ import annotations

import torch

from model.features import TokenSet


def _standardise(values: torch.Tensor) -> torch.Tensor:
    """Per channel over the rows, DRL's ``(x - mean) / std``; a channel constant over the rows (e.g.
    every frame's best token is the start token, whose feature is the same in every caption) is
    0 / 0 in DRL's code, a NaN loss; here it is 0, uncorrelated. Elsewhere the result is DRL's."""
    return (values - values.mean(0)) / values.std(0).clamp_min(1e-12)


def _decorrelation(correlation: torch.Tensor, alpha1: float, alpha2: float) -> torch.Tensor:
    width = correlation.shape[0]
    on_diagonal = (torch.diagonal(correlation) - 1).pow(2).sum()
    off_diagonal = correlation.flatten()[1:].view(width - 1, width + 1)[:, :-1].pow(2).sum()
    return alpha1 * on_diagonal + alpha2 * off_diagonal


def pooled_cdcr(text: torch.Tensor, video: torch.Tensor, alpha1: float, alpha2: float) -> torch.Tensor:
    """DRL's dp branch: (B, D) normalised text and video vectors of the positive pairs."""
    correlation = _standardise(text.float()).T @ _standardise(video.float()) / text.shape[0]
    return _decorrelation(correlation, alpha1, alpha2)


def token_cdcr(text: TokenSet, video: TokenSet, mode: int, alpha1: float, alpha2: float) -> torch.Tensor:
    """DRL's ti/wti branches (``mode`` 1, 2 or 3) over the token sets of the B positive pairs."""
    rows = torch.arange(text.mask.shape[0], device=text.mask.device)
    if mode == 1:
        token_counts, frame_counts = text.mask.sum(-1), video.mask.sum(-1)
        tokens = text.features[rows, torch.randint(0, 10000, token_counts.shape, device=rows.device) % token_counts]
        frames = video.features[rows, torch.randint(0, 10000, frame_counts.shape, device=rows.device) % frame_counts]
        correlation = _standardise(tokens).T @ _standardise(frames) / tokens.shape[0]
        return _decorrelation(correlation, alpha1, alpha2)
    cosines = torch.einsum("btd,bvd->btv", text.features, video.features) * text.mask[:, :, None] * video.mask[:, None, :]
    best_frame, best_token = cosines.max(dim=-1).indices, cosines.max(dim=-2).indices  # (B, L), (B, T)
    frames_of_tokens = video.features[rows[:, None], best_frame][text.mask]  # (N_tokens, D)
    tokens_of_frames = text.features[rows[:, None], best_token][video.mask]  # (N_frames, D)
    tokens, frames = text.features[text.mask], video.features[video.mask]
    a, b = _standardise(tokens), _standardise(frames_of_tokens)
    x, y = _standardise(frames), _standardise(tokens_of_frames)
    if mode == 2:
        first, second = a.T @ b / a.shape[0], x.T @ y / x.shape[0]
    else:
        batch = text.mask.shape[0]
        first = (text.weights[text.mask][:, None] * a).T @ b / batch
        second = (video.weights[video.mask][:, None] * x).T @ y / batch
    return _decorrelation((first + second) / 2.0, alpha1, alpha2)
