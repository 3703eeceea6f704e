"""T-MASS's stochastic text on X-Pool's pooling, as its code computes it (Jiamian-Wang/T-MASS-text-video-retrieval,
``modules/stochastic_module.py``, ``model/clip_stochastic.py``, ``trainer/trainer_stochastic.py``).

A caption is not a point but a mass around its CLIP feature t:

- the radius of t for a video v: the cosines of t with each of v's F frame features (both normalised),
  through ``linear_proj`` (Linear(F, D), identity-initialised) as a log-variance: ``log_var`` (D);
- a sample: ``t + sigma * exp(log_var)``, sigma ~ U(0, 1) (``uniform01``) or N(0, ``prior_std``);
- training: each caption is sampled with the radius of its own video; the logits are the cosines of
  the samples with X-Pool's caption-conditioned video vectors (pooled with the caption's CLIP feature),
  CLIP's symmetric loss over them; plus ``support_weight`` x the same loss for the *support* text
  ``t + exp(log_var) * unit(mean_over_captions(pooled video) - t)``;
- evaluation: for every (caption, video), ``trials`` samples with that pair's radius; the score is the
  highest cosine of a sample with the pair's pooled video vector.

Where this differs, and why: T-MASS draws new samples for every video in its evaluation loop; here each
caption's ``trials`` draws come from a generator seeded with ``seed`` and are shared by every video, so
a pair scores the same in any block, candidate list or search (a repeatable evaluation), each pair still
taking the best of ``trials`` independent draws. Padding: T-MASS's loader never pads; ``masked`` gives
padded frames a cosine of 0 in the radius and no attention in the pooling, ``reference`` uses them as
delivered. ``learnable_scalar`` is in T-MASS's state dict but never read: kept as a buffer (so its
checkpoints load) that takes no part in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.features import TextFeatures, VideoFeatures
from model.padding import is_reference
from model.similarity import DEFAULT_CHUNKS, PairScorer, ScoringChunks, Similarity, TrainingScores
from model.xpool import TextConditionedPooling, XPoolPairs


class CosineRadius(nn.Module):
    """T-MASS's ``LinearCosRadius``: the log-variance of a caption's mass for a video."""

    def __init__(self, frames: int, width: int, padding_rule: str = "masked") -> None:
        super().__init__()
        self.masked = not is_reference(padding_rule)
        self.linear_proj = nn.Linear(frames, width)
        nn.init.eye_(self.linear_proj.weight)
        nn.init.zeros_(self.linear_proj.bias)
        self.register_buffer("learnable_scalar", torch.zeros(1))  # T-MASS creates it and never reads it

    def _cosines(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor, equation: str) -> torch.Tensor:
        cosines = torch.einsum(equation, F.normalize(text, dim=-1), F.normalize(frames, dim=-1))
        if self.masked:  # (B, F) or (T, V, F) cosines; the (B, F) / (V, F) mask broadcasts onto either
            cosines = cosines * mask.to(cosines.dtype)
        return self.linear_proj(cosines)

    def paired(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Caption i with video i: (B, D), (B, F, D), (B, F) -> (B, D)."""
        return self._cosines(text, frames, mask, "bd,bfd->bf")

    def all_pairs(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Every caption with every video: (T, D), (V, F, D), (V, F) -> (T, V, D)."""
        return self._cosines(text, frames, mask, "td,vfd->tvf")


class TMASSSimilarity(Similarity):
    normalises_text = False  # the mass is around CLIP's caption feature as it is
    reads_frames = True  # a fine stage: search rescores its top candidates with it

    def __init__(self, width: int, frames: int, heads: int = 1, dropout: float = 0.3, prior: str = "uniform01", prior_std: float = 1.0,
                 support_weight: float = 0.0, trials: int = 20, seed: int = 0, padding_rule: str = "masked") -> None:  # fmt: skip
        super().__init__()
        if prior not in ("uniform01", "normal"):  # model/methods/tmass.py PRIORS: draw() reads these two
            raise ValueError(f"--tmass-prior must be uniform01 or normal, not {prior!r}")
        self.pool = TextConditionedPooling(width, heads, dropout, padding_rule)
        self.radius = CosineRadius(frames, width, padding_rule)
        self.prior, self.prior_std, self.support_weight, self.trials, self.seed = prior, prior_std, support_weight, trials, seed

    def draw(self, shape: tuple[int, ...], generator: torch.Generator | None = None, like: torch.Tensor | None = None) -> torch.Tensor:
        """sigma from the prior (T-MASS: ``torch.rand_like`` or ``torch.normal(0, std)``)."""
        if self.prior == "uniform01":
            return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
        return torch.normal(0.0, self.prior_std, size=shape, generator=generator, dtype=like.dtype, device=like.device)

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: torch.Tensor) -> TrainingScores:
        mean = text.pooled
        raw = self.pool(mean, video.frames, video.mask)  # V, T, D: once, so one dropout mask serves both losses
        pooled = F.normalize(raw, dim=-1)
        log_var = self.radius.paired(mean, video.frames, video.mask)  # each caption with its own video
        sample = mean + self.draw(tuple(mean.shape), like=mean) * torch.exp(log_var)
        logits = logit_scale * torch.einsum("td,vtd->tv", F.normalize(sample, dim=-1), pooled)
        scores = TrainingScores(logits)
        if self.support_weight:
            pointer = pooled_mean(raw) - mean
            support = F.normalize(pointer, dim=-1) * torch.exp(log_var) + mean
            scores.extra_logits.append(("support", self.support_weight, logit_scale * torch.einsum("td,vtd->tv", F.normalize(support, dim=-1), pooled)))
        return scores

    def pair_scorer(self, text: TextFeatures, video: VideoFeatures, chunks: ScoringChunks = DEFAULT_CHUNKS) -> PairScorer:
        generator = torch.Generator(device=text.pooled.device).manual_seed(self.seed)
        sigmas = self.draw((self.trials, *text.pooled.shape), generator, like=text.pooled)  # per caption and trial, shared by every video
        return TMASSPairs(self, text.pooled, video.frames, video.mask, sigmas, chunks)


def pooled_mean(pooled: torch.Tensor) -> torch.Tensor:
    """(V, T, D) caption-conditioned video vectors -> (V, D), their mean over the captions (T-MASS's support pointer)."""
    return pooled.mean(dim=1)


class TMASSPairs(XPoolPairs):
    """The best of ``trials`` samples per (caption, video), chunked as X-Pool's pairs are."""

    def __init__(self, similarity: TMASSSimilarity, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor, sigmas: torch.Tensor,
                 chunks: ScoringChunks) -> None:  # fmt: skip
        super().__init__(similarity.pool, text, frames, mask, chunks)
        self.radius, self.sigmas = similarity.radius, sigmas

    def _best(self, text: torch.Tensor, sigmas: torch.Tensor, pooled: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """(..., D) means, (K, ..., D) draws, pooled videos and radii -> (...) the best cosine over the K samples."""
        unit_pooled = F.normalize(pooled.float(), dim=-1)
        best = None
        for sigma in sigmas:  # one sample at a time: (texts x videos x D) held, never (trials x texts x videos x D)
            score = (F.normalize((text + sigma * std).float(), dim=-1) * unit_pooled).sum(-1)
            best = score if best is None else torch.maximum(best, score)
        return best

    def rectangle(self, texts: slice, videos: slice) -> torch.Tensor:
        pooled = self.pool.attend(self.query[texts], self.keys[videos], self.values[videos], self.mask[videos]).transpose(0, 1)  # T, V, D
        std = torch.exp(self.radius.all_pairs(self.text[texts], self.frames[videos], self.mask[videos]))  # T, V, D
        return self._best(self.text[texts, None], self.sigmas[:, texts, None], pooled, std)

    def paired(self, text_ids: torch.Tensor, video_ids: torch.Tensor) -> torch.Tensor:
        pooled = self.pool.attend_pairs(self.query[text_ids], self.keys[video_ids], self.values[video_ids], self.mask[video_ids])
        std = torch.exp(self.radius.paired(self.text[text_ids], self.frames[video_ids], self.mask[video_ids]))
        return self._best(self.text[text_ids], self.sigmas[:, text_ids], pooled, std)
