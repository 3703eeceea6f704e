"""CLIP4Clip and the methods built on it: an open_clip backbone, a video head, a similarity.

The model exposes the two halves separately (``encode_text``, ``encode_video``) and its
similarity (``model.similarity``, model/similarity.py) on their outputs, because training
all-gathers the halves across ranks before scoring and evaluation encodes each side once and
scores in blocks.

The similarity is one object chosen by options, so that every method shares the data stream,
trainer and evaluator (``build_similarity``):

- ``PooledCosine`` of pooled vectors (CLIP4Clip's loose heads);
- ``EMCLNet`` (model/emcl.py): EMCL-Net's text-conditioned frame pooling, EM over channels and
  reconstruction, per block of captions x videos;
- ``TokenInteraction`` wti / ti (model/interaction.py, DRL): caption tokens against the head's
  per-frame features;
- ``CrossEncoderScore`` (model/heads.py): the tightTransf cross encoder (``head="tightTransf"``).

``coarse_similarity`` is the cheap video-level cosine EERCF ranks every video with before the
fine similarity rescores the top candidates (eval/rerank.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model import backbone, vit_blocks
from model.config import method_problem
from model.eercf import EERCFSimilarity, EERCFWeights
from model.emcl import EMCLNet
from model.features import TextFeatures, VideoFeatures
from model.heads import CrossEncoderScore, build_video_pooling, masked_mean_pool
from model.interaction import TokenInteraction
from model.padding import encoder_mask, is_reference
from model.similarity import PooledCosine, Similarity

MAX_LOGIT_SCALE = math.log(100.0)
# this project's checkpoints written before the Similarity interface kept its weights under these names
LEGACY_SIMILARITY_PREFIXES = ("interaction.", "emcl.", "cross.")


def build_similarity(head: str, clip: nn.Module, width: int, max_frames: int, interaction: str, emcl: dict | None,
                     eercf: EERCFWeights | None = None, padding_rule: str = "masked") -> Similarity:  # fmt: skip
    """The one place that maps options to a similarity (refusing, with the CLI's own rule,
    combinations that cannot work: model/config.py ``method_problem``)."""
    problem = method_problem(head, interaction, emcl is not None, eercf is not None)
    if problem:
        raise ValueError(problem)
    if eercf is not None:
        vit_blocks.check_plain_vit(clip.visual, "EERCF's patch tokens")  # read after ln_post, as the class token is
        return EERCFSimilarity(width, max_frames, eercf, padding_rule)
    if head == "tightTransf":
        return CrossEncoderScore(clip, width, max_frames)
    if emcl is not None:
        return EMCLNet(**emcl, padding_rule=padding_rule)
    if interaction == "cosine":
        return PooledCosine()
    return TokenInteraction(width, weighted=interaction == "wti", padding_rule=padding_rule)


def migrate_legacy_keys(state: dict) -> dict:
    """``interaction.* / emcl.* / cross.*`` -> ``similarity.*`` (a model has exactly one of them)."""
    renamed = {}
    for key, value in state.items():
        prefix = next((p for p in LEGACY_SIMILARITY_PREFIXES if key.startswith(p)), None)
        renamed["similarity." + key.removeprefix(prefix) if prefix else key] = value
    return renamed


class CLIP4Clip(nn.Module):
    def __init__(self, clip: nn.Module, head: str = "meanP", max_frames: int = 12, interaction: str = "cosine", emcl: dict | None = None,
                 eercf: EERCFWeights | None = None, padding_rule: str = "masked") -> None:  # fmt: skip
        super().__init__()
        self.clip = clip
        self.head = head
        is_reference(padding_rule)  # an unknown rule is refused here, not at the first short clip
        self.padding_rule = padding_rule  # model/padding.py
        width = clip.text_projection.shape[1] if isinstance(clip.text_projection, torch.Tensor) else clip.text_projection.out_features
        # tightTransf has no video head: its cross encoder reads CLIP's frame features directly
        self.pool = None if head == "tightTransf" else build_video_pooling(head, clip, width, max_frames)
        self.similarity = build_similarity(head, clip, width, max_frames, interaction, emcl, eercf, padding_rule)
        # TempMe / DGL / the dual-attention seed: how the frozen CLIP is run (model/adapters.py)
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
