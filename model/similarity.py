"""How a caption and a video are scored: one class per kind of similarity, held by the model.

Every decision that depends on the kind lives in its class, so the model, the trainer and the
evaluator ask it instead of branching on option names:

- what the encoders keep (``keeps_text_tokens``) and whether the caption vector is normalised
  (``normalises_text``: EMCL-Net and the cross encoder read CLIP's feature as it is);
- what training gathers across ranks (``gathers_batch``: the cross encoder scores each rank's
  local batch, as CLIP4Clip does) and whether per-frame features take part (``reads_frames``,
  which also makes it a fine stage worth EERCF's reranking);
- the training logits (``forward``), with whatever a regulariser needs from them;
- scoring an encoded split (``pair_scorer``): any rectangle of captions x videos and each
  query's own candidates, in chunks that keep memory bounded.

The kinds: :class:`PooledCosine` here; DRL's token interaction (model/interaction.py),
EMCL-Net (model/emcl.py), EERCF (model/eercf.py), X-Pool (model/xpool.py), T-MASS (model/tmass.py)
and CLIP4Clip's cross encoder (model/heads.py), each next to its math. Adding one = a subclass that
a method's ``similarity()`` returns (model/methods/, docs/adding-a-method.md), and its test.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from model.features import TextFeatures, TokenSet, VideoFeatures


@dataclass
class TrainingScores:
    logits: torch.Tensor  # (texts, videos), temperature applied where the similarity uses one
    token_sides: tuple[TokenSet, TokenSet] | None = None  # token interaction's prepared sides (DRL's CDCR reads them)
    # a similarity with its own objective (EERCF): the weight of ``logits``' contrastive loss, more
    # (name, weight, logits) to train contrastively, and (name, weight, value) terms to add
    logits_weight: float = 1.0
    extra_logits: list[tuple[str, float, torch.Tensor]] = field(default_factory=list)
    regularisers: list[tuple[str, float, torch.Tensor]] = field(default_factory=list)


@dataclass(frozen=True)
class ScoringChunks:
    """Captions and videos scored per pass: token interaction materialises (texts, videos,
    tokens, frames) and the cross encoder (texts x videos) sequences, so neither may see a whole
    block at once."""

    texts: int = 64
    videos: int = 256


DEFAULT_CHUNKS = ScoringChunks()


class PairScorer(ABC):
    """Both sides of an encoded split, prepared once (normalised, weighted, ...), scored in any
    rectangle or against each query's own candidates. Scores leave without the temperature (it
    does not change ranks) and as float32."""

    @abstractmethod
    def block(self, texts: slice, videos: slice) -> torch.Tensor:
        """(len(texts), len(videos)) scores."""

    @abstractmethod
    def for_texts(self, text_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Each caption text_ids[i] against its own videos candidates[i] -> (A, k)."""

    @abstractmethod
    def for_videos(self, video_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Each video video_ids[i] against its own captions candidates[i] -> (B, k)."""


class Similarity(nn.Module):
    keeps_text_tokens: ClassVar[bool] = False
    reads_patches: ClassVar[bool] = False  # EERCF: the image encoder also hands over its patch tokens
    normalises_text: ClassVar[bool] = True
    reads_frames: ClassVar[bool] = False
    gathers_batch: ClassVar[bool] = True
    uses_logit_scale: ClassVar[bool] = True

    @property
    def has_fine_stage(self) -> bool:
        """Finer (and costlier) than the pooled cosine: EERCF reranks only then."""
        return self.reads_frames

    def coarse_text(self, text: torch.Tensor) -> torch.Tensor:
        """The caption vector of the coarse (first-stage) score against the pooled video vector."""
        return text

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: torch.Tensor) -> TrainingScores:
        raise NotImplementedError

    def pair_scorer(self, text: TextFeatures, video: VideoFeatures, chunks: ScoringChunks = DEFAULT_CHUNKS) -> PairScorer:
        raise NotImplementedError


class PooledCosine(Similarity):
    """CLIP4Clip's loose similarity: cosine of the normalised caption and video vectors."""

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: torch.Tensor) -> TrainingScores:
        return TrainingScores(logit_scale * text.pooled @ video.pooled.T)

    def pair_scorer(self, text: TextFeatures, video: VideoFeatures, chunks: ScoringChunks = DEFAULT_CHUNKS) -> PairScorer:
        return VectorPairs(text.pooled, video.pooled)


class VectorPairs(PairScorer):
    def __init__(self, text: torch.Tensor, video: torch.Tensor) -> None:
        self.text, self.video = text, video

    def block(self, texts: slice, videos: slice) -> torch.Tensor:
        return (self.text[texts] @ self.video[videos].T).float()

    def for_texts(self, text_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ad,akd->ak", self.text[text_ids], self.video[candidates]).float()

    def for_videos(self, video_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bd,bkd->bk", self.video[video_ids], self.text[candidates]).float()
