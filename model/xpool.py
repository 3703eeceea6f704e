"""X-Pool's text-conditioned pooling of frames, as its code computes it (layer6ai-labs/xpool,
``modules/transformer.py`` ``Transformer`` / ``MultiHeadedAttention``, ``modules/metrics.py``
``sim_matrix_training``).

For a caption's CLIP feature t and a video's CLIP frame features f_1..f_F (both as CLIP gives them,
not normalised):

1. t and every f go through the same LayerNorm (``layer_norm1``);
2. one cross-attention: the caption is the query, the frames are keys and values (``num_mha_heads``
   heads, logits over sqrt(head_dim), softmax over the frames), then ``out_proj``;
3. ``layer_norm2``, then ``x + dropout(linear_proj(x))``, then ``layer_norm3``: one video vector per
   (caption, video) pair;
4. the score is the cosine of the caption's CLIP feature and that vector; training multiplies it by
   CLIP's temperature and takes CLIP's symmetric cross entropy.

Every linear layer starts as the identity with zero bias (X-Pool's ``_init_parameters``), so at step 0
the pooled vector is a LayerNorm'd attention mix of the frames.

Padding: X-Pool's loader always yields ``num_frames`` frames, so its softmax has no mask. Under
``--padding-rule masked`` padded frames get no attention weight; ``reference`` runs X-Pool's softmax
as written, over every frame the loader delivered (padded ones included). On full-length clips the
two are identical.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.features import TextFeatures, VideoFeatures
from model.padding import is_reference
from model.similarity import DEFAULT_CHUNKS, PairScorer, ScoringChunks, Similarity, TrainingScores


class TextConditionedPooling(nn.Module):
    """X-Pool's ``Transformer``: (texts, D) and (videos, frames, D) -> (videos, texts, D)."""

    def __init__(self, width: int, heads: int = 1, dropout: float = 0.3, padding_rule: str = "masked") -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"--xpool-heads {heads} must divide the embedding width {width}")
        self.heads, self.head_dim = heads, width // heads
        self.masked = not is_reference(padding_rule)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(width, width) for _ in range(4))
        self.linear_proj = nn.Linear(width, width)
        self.layer_norm1, self.layer_norm2, self.layer_norm3 = (nn.LayerNorm(width) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.linear_proj):
            nn.init.eye_(linear.weight)
            nn.init.zeros_(linear.bias)

    def queries(self, text: torch.Tensor) -> torch.Tensor:
        """(T, D) captions -> (T, H, hd) queries: prepared once per caption, whatever it is scored against."""
        return self.q_proj(self.layer_norm1(text)).view(text.shape[0], self.heads, self.head_dim)

    def keys_values(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, F, D) frames -> keys and values (V, H, F, hd): prepared once per video."""
        frames = self.layer_norm1(frames)
        shape = (*frames.shape[:-1], self.heads, self.head_dim)
        return self.k_proj(frames).view(shape).transpose(-3, -2), self.v_proj(frames).view(shape).transpose(-3, -2)

    def _output(self, attended: torch.Tensor) -> torch.Tensor:
        """(..., D) attention output -> the pooled vector."""
        out = self.layer_norm2(self.out_proj(attended))
        return self.layer_norm3(out + self.dropout(self.linear_proj(out)))

    def attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Every prepared caption with every prepared video: (T, H, hd), (V, H, F, hd) x 2, (V, F) -> (V, T, D)."""
        logits = torch.einsum("vhfd,thd->vhft", keys, query) / math.sqrt(self.head_dim)
        if self.masked:
            logits = logits.masked_fill(~mask[:, None, :, None], float("-inf"))
        attended = torch.einsum("vhfd,vhft->vthd", values, logits.softmax(dim=2)).reshape(keys.shape[0], query.shape[0], -1)
        return self._output(attended)

    def attend_pairs(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each prepared caption with its own prepared video: (P, H, hd), (P, H, F, hd) x 2, (P, F) -> (P, D)."""
        logits = torch.einsum("phfd,phd->phf", keys, query) / math.sqrt(self.head_dim)
        if self.masked:
            logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        return self._output(torch.einsum("phfd,phf->phd", values, logits.softmax(dim=-1)).reshape(query.shape[0], -1))

    def forward(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Every text with every video: (T, D), (V, F, D), (V, F) -> (V, T, D)."""
        return self.attend(self.queries(text), *self.keys_values(frames), mask)

    def pairs(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each text with its own video: (P, D), (P, F, D), (P, F) -> (P, D)."""
        return self.attend_pairs(self.queries(text), *self.keys_values(frames), mask)


class XPoolSimilarity(Similarity):
    normalises_text = False  # X-Pool pools with CLIP's caption feature as it is (the cosine normalises it)
    reads_frames = True  # a fine stage: the index keeps frame features and search rescores with the pooling

    def __init__(self, width: int, heads: int = 1, dropout: float = 0.3, padding_rule: str = "masked") -> None:
        super().__init__()
        self.pool = TextConditionedPooling(width, heads, dropout, padding_rule)

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: torch.Tensor) -> TrainingScores:
        pooled = F.normalize(self.pool(text.pooled, video.frames, video.mask), dim=-1)  # V, T, D
        return TrainingScores(logit_scale * torch.einsum("td,vtd->tv", F.normalize(text.pooled, dim=-1), pooled))

    def pair_scorer(self, text: TextFeatures, video: VideoFeatures, chunks: ScoringChunks = DEFAULT_CHUNKS) -> PairScorer:
        return XPoolPairs(self.pool, text.pooled, video.frames, video.mask, chunks)


class XPoolPairs(PairScorer):
    """Scores in chunks: a block of T texts x V videos holds (V, T, D) pooled vectors at a time. Each
    caption's query and each video's keys and values are prepared once (not once per pair): rescoring a
    caption's k candidates then costs the attention and the output layers of k pairs alone. The chunking
    is here once; a similarity built on this pooling (T-MASS) overrides how one chunk is scored."""

    def __init__(self, pool: TextConditionedPooling, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                 chunks: ScoringChunks) -> None:  # fmt: skip
        self.pool, self.text, self.frames, self.mask, self.chunks = pool, text, frames, mask, chunks
        self.unit_text = F.normalize(text.float(), dim=-1)
        self.query = pool.queries(text)
        self.keys, self.values = pool.keys_values(frames)

    def rectangle(self, texts: slice, videos: slice) -> torch.Tensor:
        """(texts, videos) scores of one chunk."""
        pooled = F.normalize(self.pool.attend(self.query[texts], self.keys[videos], self.values[videos], self.mask[videos]).float(), dim=-1)
        return torch.einsum("td,vtd->tv", self.unit_text[texts], pooled)

    def paired(self, text_ids: torch.Tensor, video_ids: torch.Tensor) -> torch.Tensor:
        """Scores of (text_ids[i], video_ids[i]) for one chunk of pairs."""
        pooled = F.normalize(self.pool.attend_pairs(self.query[text_ids], self.keys[video_ids], self.values[video_ids],
                                                    self.mask[video_ids]).float(), dim=-1)  # fmt: skip
        return (self.unit_text[text_ids] * pooled).sum(-1)

    def block(self, texts: slice, videos: slice) -> torch.Tensor:
        text_ids, video_ids = range(len(self.text))[texts], range(len(self.frames))[videos]
        rows = []
        for t in range(0, len(text_ids), self.chunks.texts):
            part = slice(text_ids.start + t, min(text_ids.start + t + self.chunks.texts, text_ids.stop))
            cols = [self.rectangle(part, slice(video_ids.start + v, min(video_ids.start + v + self.chunks.videos, video_ids.stop)))
                    for v in range(0, len(video_ids), self.chunks.videos)]  # fmt: skip
            rows.append(torch.cat(cols, dim=1))
        return torch.cat(rows).float()

    def _pairs(self, text_ids: torch.Tensor, video_ids: torch.Tensor) -> torch.Tensor:
        step = self.chunks.texts * self.chunks.videos
        return torch.cat([self.paired(text_ids[start : start + step], video_ids[start : start + step])
                          for start in range(0, text_ids.numel(), step)])  # fmt: skip

    def for_texts(self, text_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        texts = text_ids[:, None].expand_as(candidates)
        return self._pairs(texts.reshape(-1), candidates.reshape(-1)).view(candidates.shape).float()

    def for_videos(self, video_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        videos = video_ids[:, None].expand_as(candidates)
        return self._pairs(candidates.reshape(-1), videos.reshape(-1)).view(candidates.shape).float()
