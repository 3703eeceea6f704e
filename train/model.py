"""CLIP4Clip and the methods built on it: an open_clip backbone, a video head, a similarity.

The model exposes the two halves separately (``encode_text``, ``encode_video``) and
``similarity`` on their outputs, because training all-gathers the halves across ranks
before scoring and evaluation encodes each side once and scores in blocks.

Similarities, chosen by options rather than by subclasses so that every method shares the
data stream, trainer and evaluator:

- ``cosine`` of pooled vectors (CLIP4Clip's loose heads);
- EMCL-Net's (``emcl``): text-conditioned frame pooling, then EM over channels and a
  reconstruction, per block of captions x videos (train/emcl.py);
- ``wti`` / ``ti`` (DRL): caption tokens against the head's per-frame features;
- the tightTransf cross encoder (``head="tightTransf"``).

``coarse_similarity`` is the cheap video-level cosine EERCF ranks every video with before the
fine similarity rescores the top candidates (eval/rerank.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from train import backbone
from train.emcl import EMCLNet
from train.heads import HEADS, CrossEncoderScore, build_video_pooling, masked_mean_pool
from train.interaction import INTERACTIONS, TokenInteraction, TokenSet, all_pairs

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class TextFeatures:
    pooled: torch.Tensor  # (B, D) end-token feature (normalised for the pooled cosine and token interaction)
    tokens: torch.Tensor | None = None  # (B, L, D) per-token features (token interaction only)
    mask: torch.Tensor | None = None  # (B, L) bool, real tokens


@dataclass
class VideoFeatures:
    frames: torch.Tensor  # (B, T, D) per-frame features: the loose head's sequence output, or CLIP's for tightTransf
    mask: torch.Tensor  # (B, T) bool
    pooled: torch.Tensor | None  # (B, D) normalised video vector (loose heads only)


class CLIP4Clip(nn.Module):
    def __init__(
        self, clip: nn.Module, head: str = "meanP", max_frames: int = 12, interaction: str = "cosine", emcl: dict | None = None
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose from {HEADS}")
        if interaction not in INTERACTIONS:
            raise ValueError(f"unknown interaction {interaction!r}; choose from {INTERACTIONS}")
        if head == "tightTransf" and (interaction != "cosine" or emcl is not None):
            raise ValueError("tightTransf scores pairs with its own cross encoder; --interaction and --emcl need a loose head")
        if emcl is not None and interaction != "cosine":
            raise ValueError("EMCL reconstructs pooled embeddings for the cosine; it does not combine with --interaction wti/ti")
        self.clip = clip
        self.head = head
        self.interaction_name = interaction
        width = clip.text_projection.shape[1] if isinstance(clip.text_projection, torch.Tensor) else clip.text_projection.out_features
        if head == "tightTransf":
            self.cross = CrossEncoderScore(clip, width, max_frames)
            # the cross encoder's score is the logit: the temperature takes no part, and a
            # parameter without a gradient would stall DDP's gradient reduction
            clip.logit_scale.requires_grad_(False)
        else:
            self.pool = build_video_pooling(head, clip, width, max_frames)
        if interaction != "cosine":
            self.interaction = TokenInteraction(width, weighted=interaction == "wti")
        if emcl is not None:
            self.emcl = EMCLNet(**emcl)

    @property
    def is_loose(self) -> bool:
        return self.head != "tightTransf"

    @property
    def uses_tokens(self) -> bool:
        """Whether the similarity needs per-token text features (DRL's interaction)."""
        return self.interaction_name != "cosine"

    @property
    def uses_emcl(self) -> bool:
        return hasattr(self, "emcl")

    @property
    def needs_frames(self) -> bool:
        """Whether the similarity reads per-frame features (not only a pooled video vector)."""
        return self.uses_tokens or self.uses_emcl or not self.is_loose

    @property
    def has_fine_stage(self) -> bool:
        """Whether the similarity is finer (and costlier) than the pooled cosine: EERCF reranks only then."""
        return self.needs_frames

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters outside CLIP (head, interaction weights): CLIP4Clip trains them at the full learning rate."""
        return [p for name, p in self.named_parameters() if not name.startswith("clip.")]

    def encode_text(self, tokens: torch.Tensor) -> TextFeatures:
        features = backbone.encode_text(self.clip, tokens)
        # EMCL-Net and the cross encoder read CLIP's feature as it is; the cosine heads normalise it
        raw = not self.is_loose or self.uses_emcl
        pooled = features.pooled if raw else F.normalize(features.pooled, dim=-1)
        if self.uses_tokens:
            return TextFeatures(pooled, features.tokens, features.mask)
        return TextFeatures(pooled)

    def encode_video(self, frames_uint8: torch.Tensor, mask: torch.Tensor) -> VideoFeatures:
        frames = backbone.encode_frames(self.clip, frames_uint8)
        if not self.is_loose:
            return VideoFeatures(frames=frames, mask=mask, pooled=None)
        sequence, pooled = self.pool(frames, mask)
        return VideoFeatures(frames=sequence, mask=mask, pooled=pooled)

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def token_sides(self, text: TextFeatures, video: VideoFeatures) -> tuple[TokenSet, TokenSet]:
        """Both sides prepared for token interaction (normalised, weighted)."""
        return self.interaction.text_side(text.tokens, text.mask), self.interaction.video_side(video.frames, video.mask)

    def similarity(self, text: TextFeatures, video: VideoFeatures, sides: tuple[TokenSet, TokenSet] | None = None) -> torch.Tensor:
        """(texts, videos) logits for the training loss."""
        if not self.is_loose:
            return self.cross(text.pooled, video.frames, video.mask)
        if self.uses_tokens:
            return self.logit_scale() * all_pairs(*(sides or self.token_sides(text, video)))
        if self.uses_emcl:
            return self.logit_scale() * self.emcl.logits(text.pooled, video.frames, video.mask)
        return self.logit_scale() * text.pooled @ video.pooled.T

    def coarse_vectors(self, text: torch.Tensor, video: VideoFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption vector and text-agnostic video vector (meanP of the frames for tightTransf)."""
        pooled = video.pooled if video.pooled is not None else masked_mean_pool(video.frames, video.mask)
        return F.normalize(text, dim=-1), pooled

    def coarse_similarity(self, text: torch.Tensor, video: VideoFeatures) -> torch.Tensor:
        """Text-agnostic video vector vs caption vector: the cheap first stage of EERCF."""
        text_vector, video_vector = self.coarse_vectors(text, video)
        return text_vector @ video_vector.T

    def pair_scores(self, text: TextFeatures, video: VideoFeatures) -> torch.Tensor:
        """Cross-encoder scores of explicit (text i, video i) pairs: (P, D) x (P, T, D) -> (P,).
        Token-interaction models score candidates through train/interaction.py instead."""
        if self.is_loose:
            raise ValueError("pair_scores is the tightTransf cross encoder; loose heads score with vectors or token sets")
        return self.cross.pairs(text.pooled, video.frames, video.mask)
