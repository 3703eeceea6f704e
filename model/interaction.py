"""DRL's token interaction: a caption and a video scored token by frame, not vector by vector.

Text tokens and (seqTransf-contextualised) frame features are L2-normalised and compared
pairwise. Text-to-video sums, over real tokens, each token's best frame; video-to-text sums,
over real frames, each frame's best token; the score is the mean of both directions. WTI
weighs tokens and frames by a masked softmax of a small MLP (so "the", "a" and blank frames
can count for little); TI weighs them uniformly.

One reduction serves every shape the system needs (all pairs of a text block against a video
block in training and full scoring; each query against its own k candidates when the
coarse-to-fine evaluator rescores); only the token-frame product differs, each written so
that no side is copied once per partner.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.features import TextFeatures, TokenSet, VideoFeatures
from model.padding import is_reference
from model.similarity import DEFAULT_CHUNKS, PairScorer, ScoringChunks, Similarity, TrainingScores


def masked_softmax(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension that gives padded positions exactly zero weight."""
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def padding_score(padding_rule: str) -> float:
    """What a padded position scores before the max: -inf (``masked``: padding never wins a max, so
    short clips and captions score as if it did not exist), or DRL's 0 (``reference``: its cosines
    are multiplied by the masks, and a padded 0 beats real cosines that are all negative)."""
    return 0.0 if is_reference(padding_rule) else float("-inf")


def reduce_interaction(
    similarity: torch.Tensor,
    text_mask: torch.Tensor,
    text_weights: torch.Tensor,
    frame_mask: torch.Tensor,
    frame_weights: torch.Tensor,
    padded: float = float("-inf"),
) -> torch.Tensor:
    """(..., L, T) token-frame cosines -> (...) scores; masks/weights broadcast as (..., L) / (..., T).
    ``padded``: the score of a padded position in the max (``padding_score``)."""
    best_frame = similarity.masked_fill(~frame_mask.unsqueeze(-2), padded).amax(dim=-1)  # (..., L)
    best_token = similarity.masked_fill(~text_mask.unsqueeze(-1), padded).amax(dim=-2)  # (..., T)
    # padded tokens/frames have weight 0 but their max may be -inf: zero them explicitly
    text_to_video = (text_weights * best_frame.masked_fill(~text_mask, 0.0)).sum(-1)
    video_to_text = (frame_weights * best_token.masked_fill(~frame_mask, 0.0)).sum(-1)
    return (text_to_video + video_to_text) / 2


class TokenWeights(nn.Module):
    """DRL's weight branch (``wti_arch=2``, its default): Linear(D, D) -> ReLU -> Linear(D, 1)
    per token, then a masked softmax. Same shapes as DRL's ``text_weight_fc`` /
    ``video_weight_fc``, so its checkpoints load (model/foreign_checkpoints.py)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Linear(width, 1))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_softmax(self.mlp(features).squeeze(-1).float(), mask)


class TokenInteraction(Similarity):
    """WTI (learned weights) or TI (uniform weights) between text tokens and frames.

    Each side is prepared once (normalised, weighted), then scored against many partners;
    the weights of a caption do not depend on the video it is compared with.
    """

    keeps_text_tokens = True
    reads_frames = True

    def __init__(self, width: int, weighted: bool, padding_rule: str = "masked") -> None:
        super().__init__()
        self.weighted = weighted
        self.padded = padding_score(padding_rule)
        if weighted:
            self.text_weights = TokenWeights(width)
            self.frame_weights = TokenWeights(width)

    def _side(self, features: torch.Tensor, mask: torch.Tensor, weigh: nn.Module | None) -> TokenSet:
        if weigh is not None:
            weights = weigh(features, mask)
        else:
            weights = mask.float() / mask.sum(-1, keepdim=True).clamp(min=1)
        return TokenSet(F.normalize(features.float(), dim=-1), mask, weights, self.padded)

    def text_side(self, tokens: torch.Tensor, mask: torch.Tensor) -> TokenSet:
        return self._side(tokens, mask, self.text_weights if self.weighted else None)

    def video_side(self, frames: torch.Tensor, mask: torch.Tensor) -> TokenSet:
        return self._side(frames, mask, self.frame_weights if self.weighted else None)

    def sides(self, text: TextFeatures, video: VideoFeatures) -> tuple[TokenSet, TokenSet]:
        return self.text_side(text.tokens, text.mask), self.video_side(video.frames, video.mask)

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: torch.Tensor) -> TrainingScores:
        sides = self.sides(text, video)
        return TrainingScores(logit_scale * all_pairs(*sides), token_sides=sides)

    def pair_scorer(self, text: TextFeatures, video: VideoFeatures, chunks: ScoringChunks = DEFAULT_CHUNKS) -> PairScorer:
        return TokenPairs(*self.sides(text, video), chunks)


class TokenPairs(PairScorer):
    """Token sets of a whole split, scored chunk by chunk (views, never copies of a side)."""

    def __init__(self, text: TokenSet, video: TokenSet, chunks: ScoringChunks) -> None:
        self.text, self.video, self.chunks = text, video, chunks

    def block(self, texts: slice, videos: slice) -> torch.Tensor:
        text_ids, video_ids = range(self.text.mask.shape[0])[texts], range(self.video.mask.shape[0])[videos]
        rows = []
        for t in range(0, len(text_ids), self.chunks.texts):
            row = text_ids[t : t + self.chunks.texts]
            row_texts = self.text.select(slice(row.start, row.stop))
            parts = []
            for v in range(0, len(video_ids), self.chunks.videos):
                chunk = video_ids[v : v + self.chunks.videos]
                parts.append(all_pairs(row_texts, self.video.select(slice(chunk.start, chunk.stop))).float())
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)

    def _rows_per_pass(self, candidates: torch.Tensor, per_candidate: int) -> int:
        """Queries per pass so that gathered candidate features stay near 16M floats (64 MB):
        large gathers cost page faults, not arithmetic."""
        return max(1, (16 << 20) // max(1, candidates.shape[1] * per_candidate))

    def for_texts(self, text_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        step = self._rows_per_pass(candidates, self.video.features[0].numel())
        return torch.cat([text_against_candidates(self.text.select(text_ids[r : r + step]), self.video.select(candidates[r : r + step]))
                          for r in range(0, len(text_ids), step)]).float()  # fmt: skip

    def for_videos(self, video_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        step = self._rows_per_pass(candidates, self.text.features[0].numel())
        return torch.cat([video_against_candidates(self.video.select(video_ids[r : r + step]), self.text.select(candidates[r : r + step]))
                          for r in range(0, len(video_ids), step)]).float()  # fmt: skip


def all_pairs(text: TokenSet, video: TokenSet) -> torch.Tensor:
    """(A, L) texts x (V, T) videos -> (A, V) scores in [-1, 1].

    One (A*L, D) x (D, V*T) matrix product instead of a broadcast batched matmul, which would
    first copy every text and video A x V times; same result as ``paired`` on every pair.
    """
    (count_a, length, width), (count_v, frames) = text.features.shape, video.mask.shape
    similarity = (text.features.reshape(-1, width) @ video.features.reshape(-1, width).T).view(count_a, length, count_v, frames)
    best_frame = similarity.masked_fill(~video.mask[None, None], video.padded).amax(dim=-1)  # (A, L, V)
    best_token = similarity.masked_fill(~text.mask[:, :, None, None], text.padded).amax(dim=1)  # (A, V, T)
    text_to_video = (text.weights[:, :, None] * best_frame.masked_fill(~text.mask[:, :, None], 0.0)).sum(1)
    video_to_text = (video.weights[None] * best_token.masked_fill(~video.mask[None], 0.0)).sum(-1)
    return (text_to_video + video_to_text) / 2


def paired(text: TokenSet, video: TokenSet) -> torch.Tensor:
    """Texts with their own videos, same leading shape on both sides -> scores of that shape."""
    similarity = text.features @ video.features.transpose(-1, -2)
    return reduce_interaction(similarity, text.mask, text.weights, video.mask, video.weights, text.padded)


def text_against_candidates(text: TokenSet, videos: TokenSet) -> torch.Tensor:
    """(A, L) texts, each against its own (A, k, T) candidate videos -> (A, k).

    einsum contracts as one batched product per text; the text is never copied k times."""
    similarity = torch.einsum("ald,aktd->aklt", text.features, videos.features)
    return reduce_interaction(similarity, text.mask[:, None], text.weights[:, None], videos.mask, videos.weights, text.padded)


def video_against_candidates(video: TokenSet, texts: TokenSet) -> torch.Tensor:
    """(B, T) videos, each against its own (B, k, L) candidate texts -> (B, k)."""
    similarity = torch.einsum("bkld,btd->bklt", texts.features, video.features)
    return reduce_interaction(similarity, texts.mask, texts.weights, video.mask[:, None], video.weights[:, None], video.padded)
