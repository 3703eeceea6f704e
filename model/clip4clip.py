"""CLIP4Clip and the methods built on it: an open_clip backbone, a video head, a similarity.

The model exposes the two halves separately (``encode_text``, ``encode_video``) and its
similarity (``model.similarity``, model/similarity.py) on their outputs, because training
all-gathers the halves across ranks before scoring and evaluation encodes each side once and
scores in blocks.

The similarity is one object, brought by the active method (model/methods/; ``build_similarity``),
so that every method shares the data stream, trainer and evaluator: ``PooledCosine`` of pooled
vectors when none brings one (CLIP4Clip's loose heads), DRL's token interaction, EMCL-Net's,
EERCF's or the tightTransf cross encoder otherwise.

``coarse_similarity`` is the cheap video-level cosine EERCF ranks every video with before the
fine similarity rescores the top candidates (eval/rerank.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model import backbone
from model.config import ModelConfig
from model.features import TextFeatures, VideoFeatures
from model.heads import build_video_pooling, masked_mean_pool
from model.options import LOOSE_HEADS
from model.padding import encoder_mask, is_reference
from model.similarity import PooledCosine, Similarity

MAX_LOGIT_SCALE = math.log(100.0)
# this project's checkpoints written before the Similarity interface kept its weights under these names
LEGACY_SIMILARITY_PREFIXES = ("interaction.", "emcl.", "cross.")


def build_similarity(clip: nn.Module, width: int, config: ModelConfig) -> Similarity:
    """The similarity of the one active method that brings its own (model/methods/), else the
    pooled cosine. The methods' rules keep a second one out; it is refused here too."""
    built = [(m.name, s) for m in config.active_methods() if (s := m.similarity(config, clip, width)) is not None]
    if len(built) > 1:
        raise ValueError(f"two methods bring a similarity: {', '.join(name for name, _ in built)}; use one of them")
    return built[0][1] if built else PooledCosine()


def migrate_legacy_keys(state: dict) -> dict:
    """``interaction.* / emcl.* / cross.*`` -> ``similarity.*`` (a model has exactly one of them)."""
    renamed = {}
    for key, value in state.items():
        prefix = next((p for p in LEGACY_SIMILARITY_PREFIXES if key.startswith(p)), None)
        renamed["similarity." + key.removeprefix(prefix) if prefix else key] = value
    return renamed


class CLIP4Clip(nn.Module):
    """Built from a ``ModelConfig`` (model/factory.py adds the PEFT parts): the head is the core's,
    the similarity the active method's (``build_similarity``)."""

    def __init__(self, clip: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        problem = config.problem()
        if problem:
            raise ValueError(problem)
        self.clip = clip
        self.head = config.sim_header
        self.padding_rule = config.resolved_padding_rule()  # model/padding.py
        is_reference(self.padding_rule)  # an unknown rule is refused here, not at the first short clip
        width = clip.text_projection.shape[1] if isinstance(clip.text_projection, torch.Tensor) else clip.text_projection.out_features
        # a head a method adds (tightTransf's cross encoder) scores pairs itself and reads CLIP's frame features directly
        self.pool = build_video_pooling(self.head, clip, width, config.max_frames) if self.head in LOOSE_HEADS else None
        self.similarity = build_similarity(clip, width, config)
        # TempMe / DGL / the dual-attention seed: how the frozen CLIP is run (``Method.adapter``, model/methods/registry.py)
        self.adapter: nn.Module | None = None
        if not self.similarity.uses_logit_scale:
            # the score is the logit: the temperature takes no part, and a parameter without a
            # gradient would stall DDP's gradient reduction
            clip.logit_scale.requires_grad_(False)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201 - nn.Module's signature
        return super().load_state_dict(migrate_legacy_keys(state_dict), strict=strict, assign=assign)

    def encode_text(self, tokens: torch.Tensor) -> TextFeatures:
        if self.adapter is not None and hasattr(self.adapter, "encode_text"):
            features = self.adapter.encode_text(self.clip, tokens)
        else:
            features = backbone.encode_text(self.clip, tokens)
        pooled = F.normalize(features.pooled, dim=-1) if self.similarity.normalises_text else features.pooled
        if self.similarity.keeps_text_tokens:
            return TextFeatures(pooled, features.tokens, features.mask)
        return TextFeatures(pooled)

    def encode_video(self, frames_uint8: torch.Tensor, mask: torch.Tensor) -> VideoFeatures:
        global_feature = clip_frames = patches = None
        # reference rule: padded frames reach CLIP as the reference loaders feed them, all zeros after normalisation
        zeroed = mask if is_reference(self.padding_rule) else None
        if self.similarity.reads_patches:  # EERCF: frames and patches from one image-encoder pass
            frames, patches = backbone.encode_frames_and_patches(self.clip, frames_uint8, zeroed)
            clip_frames = frames
        elif self.adapter is None:
            frames = backbone.encode_frames(self.clip, frames_uint8, zeroed)
        else:
            pixels = backbone.normalize_frames(frames_uint8, zeroed)
            frames, global_feature = self.adapter.encode_video(self.clip, pixels, encoder_mask(mask, self.padding_rule))
        if self.pool is None:
            return VideoFeatures(frames=frames, mask=mask, pooled=None)
        sequence, pooled = self.pool(frames, mask)
        if global_feature is not None:
            # score-level mix: cos(text, this) = alpha cos(text, global) + (1 - alpha) cos(text, pooled)
            alpha = self.adapter.alpha
            pooled = alpha * F.normalize(global_feature, dim=-1) + (1 - alpha) * pooled
        return VideoFeatures(frames=sequence, mask=mask, pooled=pooled, clip_frames=clip_frames, patches=patches)

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def logits(self, text: TextFeatures, video: VideoFeatures) -> torch.Tensor:
        """(texts, videos) logits for the training loss."""
        return self.similarity(text, video, self.logit_scale()).logits

    def coarse_text_vector(self, text: torch.Tensor) -> torch.Tensor:
        """The caption side of the coarse score (the video index's query vector)."""
        return self.similarity.coarse_text(F.normalize(text, dim=-1))

    @staticmethod
    def coarse_video_vector(video: VideoFeatures) -> torch.Tensor:
        """The text-agnostic video vector: the head's pooled vector (meanP of the frames for tightTransf)."""
        return video.pooled if video.pooled is not None else masked_mean_pool(video.frames, video.mask)

    def coarse_vectors(self, text: torch.Tensor, video: VideoFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption vector and text-agnostic video vector of EERCF's first stage."""
        return self.coarse_text_vector(text), self.coarse_video_vector(video)

    def coarse_similarity(self, text: torch.Tensor, video: VideoFeatures) -> torch.Tensor:
        """Text-agnostic video vector vs caption vector: the cheap first stage of EERCF."""
        text_vector, video_vector = self.coarse_vectors(text, video)
        return text_vector @ video_vector.T
