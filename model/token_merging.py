"""Token merging as TempMe does it (ToMe's bipartite soft matching, TempMe's ``module_tome_*.py``).

Tokens live in groups (G, N, D): one frame, later a segment of frames joined by TempMe's
cross-frame merging. The first ``protected`` tokens of a group are class tokens and never merge.
The rest alternate into two sets A and B (A = even positions when ``protected`` is even, odd
otherwise, exactly as TempMe splits them); each A token finds its most similar B token (cosine
of the metric), and the ``r`` A tokens with the best matches are averaged into their B partner,
weighted by mass. Mass ("size" in ToMe) counts the original tokens a token stands for; the sum
over a group never changes.

Padding, which TempMe does not have (its clips are always 12 frames): a padded frame's tokens
carry mass 0. Massless A tokens are merged first and a token with mass never merges into a
massless one, so which real tokens merge, and what they become, does not depend on what the
padding contains; with no padding this is TempMe's matching exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class TokenGroups:
    """Tokens of every group of a batch, with their mass; ``protected`` class tokens lead each group."""

    x: torch.Tensor  # (G, N, D)
    mass: torch.Tensor  # (G, N)
    protected: int  # class tokens at the front of each group
    groups_per_video: int


def _split(values: torch.Tensor, protected: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of the unprotected tokens, A = the merge sources (TempMe's parity rule)."""
    rest = values[:, protected:]
    if protected % 2 == 0:
        return rest[:, ::2], rest[:, 1::2]
    return rest[:, 1::2], rest[:, ::2]


def bipartite_matching(metric: torch.Tensor, mass: torch.Tensor, r: int, protected: int) -> Callable[[torch.Tensor, str], torch.Tensor] | None:
    """A merge function that removes ``r`` tokens from each group, or None when r is 0.

    ``metric`` (G, N, C) decides similarity (keys averaged over heads inside a block, the hidden
    state when frames join); it is not differentiated through, as in ToMe.
    """
    sources = (metric.shape[1] - protected + (0 if protected % 2 else 1)) // 2  # size of A
    r = min(r, sources)
    if r <= 0:
        return None
    with torch.no_grad():
        normalised = metric / metric.norm(dim=-1, keepdim=True)
        a, b = _split(normalised, protected)
        mass_a, mass_b = _split(mass[..., None], protected)
        empty_a, empty_b = mass_a[..., 0] <= 0, mass_b[..., 0] <= 0
        scores = a @ b.transpose(-1, -2)
        if empty_b.any():
            scores = scores.masked_fill(~empty_a[:, :, None] & empty_b[:, None, :], float("-inf"))
        best, partner = scores.max(dim=-1)
        if empty_a.any():
            best = best.masked_fill(empty_a, float("inf"))
        order = best.argsort(dim=-1, descending=True, stable=True)[..., None]
        kept = order[:, r:].sort(dim=1).values
        merged = order[:, :r]
        destination = partner[..., None].gather(dim=1, index=merged)

    def merge(x: torch.Tensor, mode: str = "sum") -> torch.Tensor:
        head = x[:, :protected]
        src, dst = _split(x, protected)
        groups, _, width = src.shape
        unmerged = src.gather(dim=1, index=kept.expand(groups, kept.shape[1], width))
        moving = src.gather(dim=1, index=merged.expand(groups, r, width))
        dst = dst.scatter_reduce(1, destination.expand(groups, r, width), moving, reduce=mode)
        return torch.cat([head, unmerged, dst], dim=1)

    return merge


def merge_weighted(merge: Callable | None, groups: TokenGroups) -> TokenGroups:
    """ToMe's ``merge_wavg``: mass-weighted means; mass adds up."""
    if merge is None:
        return groups
    mass = groups.mass[..., None].float()  # masses and weighted sums in fp32, also under bf16 autocast
    total = merge(groups.x.float() * mass, "sum")
    new_mass = merge(mass, "sum")
    x = total / new_mass.clamp(min=torch.finfo(new_mass.dtype).tiny)  # a massless token becomes 0 (0 / tiny)
    return TokenGroups(x.to(groups.x.dtype), new_mass[..., 0], groups.protected, groups.groups_per_video)


def join_groups(values: torch.Tensor, factor: int, protected: int) -> torch.Tensor:
    """TempMe's cross-frame join: ``factor`` consecutive groups become one, their class tokens
    first (in group order), then each group's other tokens in group order. (G, N, ...) -> (G/f, f*N, ...)."""
    groups, count = values.shape[:2]
    rest = values.shape[2:]
    joined = values.reshape(groups // factor, factor, count, *rest)
    head = joined[:, :, :protected].reshape(groups // factor, factor * protected, *rest)
    tail = joined[:, :, protected:].reshape(groups // factor, factor * (count - protected), *rest)
    return torch.cat([head, tail], dim=1)
