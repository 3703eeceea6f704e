"""EERCF as its public code computes it (adxcreative/EERCF, ``modules/modeling_fineclip_patches_cdcl.py``
``_loose_similarity``, ``main_eercf.py`` train_epoch / eval_epoch).

One CLIP pass gives three granularities per video: the video level (seqTransf over CLIP's frame
features, normalised, masked mean, normalised: ``p``), the frame level (CLIP's own frame
features, normalised: ``f``; the seqTransf outputs, normalised: ``s``) and the patch level (every
frame's patch tokens after ``ln_post`` and the projection, normalised: ``x``). With the caption's
normalised end-token feature ``t`` (all scores below are cosines; training multiplies each by
CLIP's temperature):

- video: ``t W p`` with a learned D x D matrix W (identity at init, ``global_mat_weight``);
- frame weak: ``sum_f c_f (softmax(c / 0.01) Wf)_f``, c = t . f over frames, Wf a learned F x F
  matrix (identity at init, ``frame_logit_weight``);
- frame strong: s pooled with softmax(c / 0.1) over frames, normalised, cosine with t;
- patch weak: ``sum_n c_n softmax(c / 0.01)_n``, c = t . x over every patch of every frame;
- patch strong: x pooled with softmax(c / 0.01), normalised, cosine with t.

Training (its defaults): weak = 0.5 video + 0.5 frame weak + 0.05 patch weak, strong = 1.0 frame
strong + 0 patch strong; loss = 0.8 CE(weak) + 0.2 CE(strong) + 0.001 x (Pearson(t, p) +
Pearson(t, frame-strong vector) + 0 x Pearson(t, patch-strong vector)), CE symmetric. In training
the strong pooling of video b uses the weights of its own caption (detached) for every caption
(EERCF's ``torch.diagonal``); at test time each caption pools each video with its own weights.
Pearson: channels z-scored over the batch (unbiased std), C = z_t^T z_v / B,
0.14 sum (1 - C_ii)^2 (off-diagonal weight 0).

Test time (``eval_epoch``): rank every video by the video score, rescore the top 50 with
0.5 video + 0.8 frame weak + 0.2 frame strong + 0.2 patch weak (its ``ii, jj, kk``).

Where this differs from EERCF under ``--padding-rule masked`` (the default): padded frames (and
their patches) are excluded from every softmax and sum (EERCF has no frame mask there; ``reference``
includes them, model/padding.py); the scores are computed blockwise and
vectorised instead of EERCF's per-caption Python loops; the frame-strong norm uses each video's
Gram matrix of s (the same number, no (captions x videos x D) tensor).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.features import TextFeatures, VideoFeatures
from model.padding import is_reference
from model.similarity import DEFAULT_CHUNKS, PairScorer, ScoringChunks, Similarity, TrainingScores

WEAK_TEMPERATURE = 0.01  # EERCF's "/ 1e-2" and ".div(0.01)" (frame weak, patch weak and patch strong weights)
STRONG_FRAME_TEMPERATURE = 0.1  # EERCF's ".div(0.1)" (frame strong weights)
PEARSON_ALPHA_DIAGONAL, PEARSON_ALPHA_OFF = 0.14, 0.0  # EERCF's cdcr_alpha1 / cdcr_alpha2
# eval_epoch's fine score (its ii, jj, kk): 0.8 frame weak + 0.2 frame strong + 0.2 patch weak + 0.5 video
RERANK = {"frame_weak": 0.8, "frame_strong": 0.2, "patch_weak": 0.2, "video": 0.5}


@dataclass(frozen=True)
class EERCFWeights:
    """main_eercf.py's training weights (its flag names without the ``eercf_`` prefix)."""

    video: float = 0.5
    weakframe: float = 0.5
    strongframe: float = 1.0
    weakpatch: float = 0.05
    strongpatch: float = 0.0
    weak_loss: float = 0.8
    strong_loss: float = 0.2
    cdcl_loss: float = 0.001
    cdcl_video: float = 1.0
    cdcl_frame: float = 1.0
    cdcl_patch: float = 0.0


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def pearson_decorrelation(text: torch.Tensor, video: torch.Tensor, alpha_diagonal: float = PEARSON_ALPHA_DIAGONAL,
                          alpha_off: float = PEARSON_ALPHA_OFF) -> torch.Tensor:  # fmt: skip
    """EERCF's intra-feature Pearson constraint between (B, D) text and video vectors of positive
    pairs. Not DRL's CDCR (model/cdcr.py): that one correlates matched token pairs with weights.
    A channel constant over the batch (std 0: EERCF divides by it and gets NaN; seen with bf16 and
    small batches) is left at z = 0 by a 1e-8 floor on the std, which changes nothing else."""
    z_text = (text - text.mean(0)) / text.std(0).clamp(min=1e-8)
    z_video = (video - video.mean(0)) / video.std(0).clamp(min=1e-8)
    correlation = z_text.T @ z_video / text.shape[0]
    diagonal = torch.diagonal(correlation)
    off = correlation.pow(2).sum() - diagonal.pow(2).sum()
    return alpha_diagonal * (diagonal - 1).pow(2).sum() + alpha_off * off


@dataclass
class Granularities:
    """One side of a split ready for EERCF's fine scores (normalised, fp32 where it is scored)."""

    pooled: torch.Tensor  # (V, D) p
    sequence: torch.Tensor  # (V, F, D) s
    gram: torch.Tensor  # (V, F, F) s s^T, for the frame-strong norm
    frames: torch.Tensor  # (V, F, D) f
    patches: torch.Tensor  # (V, F * P, D) x
    mask: torch.Tensor  # (V, F)
    patch_mask: torch.Tensor  # (V, F * P)


def granularities(video: VideoFeatures, padding_rule: str = "masked") -> Granularities:
    """``padding_rule`` reference: every frame (and patch) counts in the frame and patch softmaxes and
    sums, as in EERCF's code (model/padding.py); the video level ``p`` keeps its masked mean."""
    if video.patches is None or video.clip_frames is None:
        raise ValueError("EERCF scores need the patch tokens and CLIP's frame features of one image-encoder pass")
    sequence = F.normalize(video.frames.float(), dim=-1)
    patches = F.normalize(video.patches, dim=-1)
    per_frame = patches.shape[2]
    fine_mask = torch.ones_like(video.mask) if is_reference(padding_rule) else video.mask
    return Granularities(
        pooled=video.pooled.float(),
        sequence=sequence,
        gram=sequence @ sequence.transpose(-1, -2),
        frames=F.normalize(video.clip_frames.float(), dim=-1),
        patches=patches.flatten(1, 2),
        mask=fine_mask,
        patch_mask=fine_mask.repeat_interleave(per_frame, dim=1),
    )


class EERCFSimilarity(Similarity):
    reads_frames = True
    reads_patches = True

    def __init__(self, width: int, max_frames: int, weights: EERCFWeights | None = None, padding_rule: str = "masked") -> None:
        super().__init__()
        self.weights = weights or EERCFWeights()
        self.padding_rule = padding_rule
        self.global_mat_weight = nn.Parameter(torch.eye(width))
        self.frame_logit_weight = nn.Parameter(torch.eye(max_frames))

    def coarse_text(self, text: torch.Tensor) -> torch.Tensor:
        """The caption side of the video-level score (t W): EERCF's first stage ranks by it."""
        return text @ self.global_mat_weight.to(text.dtype)

    def frame_weak(self, cosines: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(..., F) caption-frame cosines -> (...) frame-weak scores."""
        frames = cosines.shape[-1]
        weights = masked_softmax(cosines / WEAK_TEMPERATURE, mask) @ self.frame_logit_weight[:frames, :frames].to(cosines.dtype)
        return (cosines * weights).masked_fill(~mask, 0.0).sum(-1)

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: torch.Tensor) -> TrainingScores:
        w = self.weights
        sides = granularities(video, self.padding_rule)
        t = text.pooled.float()
        mask = sides.mask[None]  # (1, B, F)
        video_logits = self.coarse_text(t) @ sides.pooled.T
        frame_cos = torch.einsum("cd,bfd->cbf", t, sides.frames)
        patch_cos = torch.einsum("cd,bnd->cbn", t, sides.patches)
        frame_weak = self.frame_weak(frame_cos, mask.expand_as(frame_cos))
        patch_mask = sides.patch_mask[None].expand_as(patch_cos)
        patch_weights = masked_softmax(patch_cos / WEAK_TEMPERATURE, patch_mask)
        patch_weak = (patch_cos * patch_weights).masked_fill(~patch_mask, 0.0).sum(-1)
        # strong: each video pooled with its own caption's weights (EERCF's diagonal), detached
        positives = torch.arange(t.shape[0], device=t.device)
        frame_pool = masked_softmax(frame_cos[positives, positives] / STRONG_FRAME_TEMPERATURE, sides.mask).detach()
        frame_vector = F.normalize((frame_pool[..., None] * sides.sequence).sum(1), dim=-1)
        patch_pool = patch_weights[positives, positives].detach()
        patch_vector = F.normalize((patch_pool[..., None] * sides.patches).sum(1), dim=-1)
        frame_strong, patch_strong = t @ frame_vector.T, t @ patch_vector.T
        weak = logit_scale * (w.video * video_logits + w.weakframe * frame_weak + w.weakpatch * patch_weak)
        strong = logit_scale * (w.strongframe * frame_strong + w.strongpatch * patch_strong)
        pearson = (w.cdcl_video * pearson_decorrelation(t, sides.pooled) + w.cdcl_frame * pearson_decorrelation(t, frame_vector)
                   + w.cdcl_patch * pearson_decorrelation(t, patch_vector))  # fmt: skip
        return TrainingScores(weak, logits_weight=w.weak_loss, extra_logits=[("strong", w.strong_loss, strong)],
                              regularisers=[("pearson", w.cdcl_loss, pearson)])  # fmt: skip

    def pair_scorer(self, text: TextFeatures, video: VideoFeatures, chunks: ScoringChunks = DEFAULT_CHUNKS) -> PairScorer:
        return EERCFPairs(self, F.normalize(text.pooled.float(), dim=-1), granularities(video, self.padding_rule), chunks)

    def fine(self, video_score: torch.Tensor, frame_cos: torch.Tensor, sequence_cos: torch.Tensor,
             gram: torch.Tensor, mask: torch.Tensor, patch_cos: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """EERCF's test-time fine score from cosines laid out (..., F) / (..., F*P), any leading shape."""
        frame_weak = self.frame_weak(frame_cos, mask)
        pool = masked_softmax(frame_cos / STRONG_FRAME_TEMPERATURE, mask)
        norm = torch.einsum("...f,...fg,...g->...", pool, gram, pool).clamp(min=1e-12).sqrt()
        frame_strong = (pool * sequence_cos).sum(-1) / norm
        patch_weights = masked_softmax(patch_cos / WEAK_TEMPERATURE, patch_mask)
        patch_weak = (patch_cos * patch_weights).masked_fill(~patch_mask, 0.0).sum(-1)
        return (RERANK["video"] * video_score + RERANK["frame_weak"] * frame_weak + RERANK["frame_strong"] * frame_strong
                + RERANK["patch_weak"] * patch_weak)  # fmt: skip


class EERCFPairs(PairScorer):
    """EERCF's fine score over a split: blocks of captions x videos, or each query's candidates,
    a bounded number of (caption, patch) cosines per pass."""

    MAX_COSINES = 8 << 20  # caption-patch cosines held at once (32 MB in fp32)

    def __init__(self, similarity: EERCFSimilarity, text: torch.Tensor, video: Granularities, chunks: ScoringChunks) -> None:
        self.similarity, self.text, self.video, self.chunks = similarity, text, video, chunks
        with torch.no_grad():
            self.coarse_text = similarity.coarse_text(text)

    def _rectangle(self, texts: slice, v: slice, patches: torch.Tensor) -> torch.Tensor:
        """Captions ``texts`` x videos ``v`` (``patches``: those videos' patch tokens, already fp32)."""
        g, s, t = self.video, self.similarity, self.text[texts]
        frame_cos = torch.einsum("ad,vfd->avf", t, g.frames[v])
        sequence_cos = torch.einsum("ad,vfd->avf", t, g.sequence[v])
        patch_cos = torch.einsum("ad,vnd->avn", t, patches)
        mask, patch_mask = g.mask[v][None].expand_as(frame_cos), g.patch_mask[v][None].expand_as(patch_cos)
        return s.fine(self.coarse_text[texts] @ g.pooled[v].T, frame_cos, sequence_cos, g.gram[v][None], mask, patch_cos, patch_mask)

    def block(self, texts: slice, videos: slice) -> torch.Tensor:
        """Video chunks outside, caption chunks inside: each chunk's fp16 patches become fp32 once."""
        text_ids, video_ids = range(self.text.shape[0])[texts], range(self.video.pooled.shape[0])[videos]
        per_video = self.video.patches.shape[1]
        step_v = max(1, min(self.chunks.videos, self.MAX_COSINES // max(1, self.chunks.texts * per_video)))
        scores = torch.empty(len(text_ids), len(video_ids), device=self.text.device)
        for v in range(0, len(video_ids), step_v):
            columns = slice(video_ids[v], video_ids[min(v + step_v, len(video_ids)) - 1] + 1)
            patches = self.video.patches[columns].float()
            for t in range(0, len(text_ids), self.chunks.texts):
                rows = slice(text_ids[t], text_ids[min(t + self.chunks.texts, len(text_ids)) - 1] + 1)
                scores[t : t + self.chunks.texts, v : v + step_v] = self._rectangle(rows, columns, patches)
        return scores

    def for_texts(self, text_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Each caption against its own k videos, one caption at a time: its candidates' patches
        (k x F x P x D) are read once for it and never copied for the others (this part is
        memory-bound, unlike ``block``'s matrix products)."""
        g, s = self.video, self.similarity
        out = []
        for query, cand in zip(text_ids.tolist(), candidates, strict=True):
            text = self.text[query]
            frame_cos = g.frames[cand] @ text  # (k, F)
            sequence_cos = g.sequence[cand] @ text
            patch_cos = g.patches[cand].float() @ text  # (k, F * P)
            video_score = g.pooled[cand] @ self.coarse_text[query]
            out.append(s.fine(video_score, frame_cos, sequence_cos, g.gram[cand], g.mask[cand], patch_cos, g.patch_mask[cand]))
        return torch.stack(out).float()

    def for_videos(self, video_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Each video against its own k captions (the captions are gathered: (B, k, D) is small)."""
        g, s = self.video, self.similarity
        step = max(1, self.MAX_COSINES // max(1, candidates.shape[1] * g.patches.shape[1]))
        out = []
        for r in range(0, len(video_ids), step):
            videos, texts = video_ids[r : r + step], self.text[candidates[r : r + step]]  # (b, k, D)
            frame_cos = torch.einsum("bkd,bfd->bkf", texts, g.frames[videos])
            sequence_cos = torch.einsum("bkd,bfd->bkf", texts, g.sequence[videos])
            patch_cos = torch.einsum("bkd,bnd->bkn", texts, g.patches[videos].float())
            video_score = torch.einsum("bkd,bd->bk", self.coarse_text[candidates[r : r + step]], g.pooled[videos])
            mask = g.mask[videos][:, None].expand_as(frame_cos)
            patch_mask = g.patch_mask[videos][:, None].expand_as(patch_cos)
            out.append(s.fine(video_score, frame_cos, sequence_cos, g.gram[videos][:, None], mask, patch_cos, patch_mask))
        return torch.cat(out).float()
