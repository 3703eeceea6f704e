"""CLIP4Clip: an open_clip backbone, a similarity head, and the learnable temperature.

The model exposes the two halves separately (``encode_text``, ``encode_video``) and
``similarity`` on their outputs, because training all-gathers the halves across ranks
before scoring and evaluation encodes each side once and scores in blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from train import backbone
from train.heads import HEADS, CrossEncoderScore, build_video_pooling

MAX_LOGIT_SCALE = math.log(100.0)


@dataclass
class VideoFeatures:
    frames: torch.Tensor  # (B, T, D) per-frame features from CLIP
    mask: torch.Tensor  # (B, T) bool
    pooled: torch.Tensor | None  # (B, D) normalised video vector (loose heads only)


class CLIP4Clip(nn.Module):
    def __init__(self, clip: nn.Module, head: str = "meanP", max_frames: int = 12) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose from {HEADS}")
        self.clip = clip
        self.head = head
        width = clip.text_projection.shape[1] if isinstance(clip.text_projection, torch.Tensor) else clip.text_projection.out_features
        if head == "tightTransf":
            self.cross = CrossEncoderScore(clip, width, max_frames)
            # the cross encoder's score is the logit: the temperature takes no part, and a
            # parameter without a gradient would stall DDP's gradient reduction
            clip.logit_scale.requires_grad_(False)
        else:
            self.pool = build_video_pooling(head, clip, width, max_frames)

    @property
    def is_loose(self) -> bool:
        return self.head != "tightTransf"

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters CLIP4Clip trains at the full learning rate (everything outside CLIP)."""
        return [p for name, p in self.named_parameters() if not name.startswith("clip.")]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        features = backbone.encode_text(self.clip, tokens).pooled
        return F.normalize(features, dim=-1) if self.is_loose else features

    def encode_video(self, frames_uint8: torch.Tensor, mask: torch.Tensor) -> VideoFeatures:
        frames = backbone.encode_frames(self.clip, frames_uint8)
        pooled = self.pool(frames, mask) if self.is_loose else None
        return VideoFeatures(frames=frames, mask=mask, pooled=pooled)

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def similarity(self, text: torch.Tensor, video: VideoFeatures) -> torch.Tensor:
        """(texts, videos) logits: scaled cosine for loose heads, the cross-encoder score for tight."""
        if self.is_loose:
            return self.logit_scale() * text @ video.pooled.T
        return self.cross(text, video.frames, video.mask)
