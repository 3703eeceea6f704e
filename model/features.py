"""What the encoders hand to a similarity: one type per side, shared by backbone, model, trainer and evaluator."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextFeatures:
    pooled: torch.Tensor  # (B, D) end-token feature (normalised unless the similarity reads it raw)
    tokens: torch.Tensor | None = None  # (B, L, D) per-token features (kept only for token interaction)
    mask: torch.Tensor | None = None  # (B, L) bool, real tokens (start..end inclusive)


@dataclass
class VideoFeatures:
    frames: torch.Tensor  # (B, T, D) per-frame features: the loose head's sequence output, or CLIP's for tightTransf
    mask: torch.Tensor  # (B, T) bool
    pooled: torch.Tensor | None  # (B, D) normalised video vector (loose heads only)
    # EERCF's finer granularities, from the same image-encoder pass (only when its similarity reads them)
    clip_frames: torch.Tensor | None = None  # (B, T, D) CLIP's own frame features, before the head
    patches: torch.Tensor | None = None  # (B, T, P, D) every frame's patch tokens after ln_post and the projection


@dataclass
class TokenSet:
    """One side ready for interaction: normalised (N, S, D) features, (N, S) mask and weights."""

    features: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor
    padded: float = float("-inf")  # a padded position's score in the interaction's max (model/interaction.py padding_score)

    def select(self, index: torch.Tensor | slice) -> TokenSet:
        """Rows ``index`` (an index tensor of any shape: each query's candidates; or a slice: a view)."""
        return TokenSet(self.features[index], self.mask[index], self.weights[index], self.padded)

    def to(self, device: torch.device) -> TokenSet:
        return TokenSet(self.features.to(device), self.mask.to(device), self.weights.to(device), self.padded)
