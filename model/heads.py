"""CLIP4Clip's similarity heads: how frame features and a caption become one score.

Loose heads (meanP, seqLSTM, seqTransf) turn frames into one video vector, so videos and
texts are encoded independently and scored by a cosine; tightTransf scores each
(text, video) pair with a cross encoder. All heads respect the frame mask: padded frames
of short clips never contribute.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.features import TextFeatures, VideoFeatures
from model.options import LOOSE_HEADS
from model.similarity import DEFAULT_CHUNKS, PairScorer, ScoringChunks, Similarity, TrainingScores


def masked_mean_pool(frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """meanP: normalise each frame, average the real ones, renormalise."""
    frames = F.normalize(frames, dim=-1)
    weights = mask.to(frames.dtype).unsqueeze(-1)
    pooled = (frames * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return F.normalize(pooled, dim=-1)


def key_padding_attn_mask(mask: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) bool -> additive (B*heads, L, L) mask that hides padded keys."""
    hidden = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    batch, length = mask.shape
    return hidden[:, None, None, :].expand(batch, heads, length, length).reshape(batch * heads, length, length)


# CLIP4Clip's seqTransf and cross encoder are ``modules/module_cross.py``'s Transformer:
# QuickGELU MLPs and a TF-style LayerNorm with eps 1e-12, whatever activation CLIP itself uses.
CLIP4CLIP_LAYER_NORM_EPS = 1e-12
# CLIP4Clip's ``init_weights`` (BERT's): normal(0, 0.02) for Linear/Embedding weights, zero biases.
CLIP4CLIP_INIT_STD = 0.02


def clip4clip_init_(module: nn.Module) -> None:
    """CLIP4Clip's ``PreTrainedModel.init_weights`` applied to every submodule."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear | nn.Embedding):
            nn.init.normal_(sub.weight, std=CLIP4CLIP_INIT_STD)
        if isinstance(sub, nn.Linear) and sub.bias is not None:
            nn.init.zeros_(sub.bias)
        if isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


def clip4clip_blocks(clip: nn.Module, width: int, layers: int) -> tuple[nn.ModuleList, int]:
    """``layers`` CLIP4Clip transformer blocks, started from CLIP's text layers 0..layers-1.

    CLIP4Clip's "initialization trick" (``modeling.py`` from_pretrained) copies the first text
    layers into seqTransf's and tightTransf's transformers. The blocks are built here with
    CLIP4Clip's own activation and LayerNorm and only the weights are copied, so a CLIP built
    with GELU does not pass its activation on. When the widths differ (a backbone CLIP4Clip
    never paired this way) the blocks start from CLIP4Clip's ``init_weights`` instead.
    Returns the blocks and their head count (width // 64, CLIP4Clip's ``transformer_heads``).
    """
    heads = max(1, width // 64)
    norm = partial(LayerNorm, eps=CLIP4CLIP_LAYER_NORM_EPS)
    blocks = nn.ModuleList(ResidualAttentionBlock(width, heads, act_layer=QuickGELU, norm_layer=norm) for _ in range(layers))
    text = clip.transformer
    if text.width == width and len(text.resblocks) >= layers:
        for block, source in zip(blocks, text.resblocks, strict=False):
            block.load_state_dict(source.state_dict())
    else:
        clip4clip_init_(blocks)
    return blocks, heads


def clip_positions(clip: nn.Module, width: int) -> nn.Embedding:
    """CLIP4Clip's frame/cross position table: one row per CLIP text position (77), started
    from CLIP's text positional embedding (its initialization trick), else normal(0.02)."""
    text_positions = clip.positional_embedding
    table = nn.Embedding(text_positions.shape[0], width)
    if text_positions.shape[1] == width:
        with torch.no_grad():
            table.weight.copy_(text_positions)
    else:
        nn.init.normal_(table.weight, std=CLIP4CLIP_INIT_STD)
    return table


def check_positions(table: nn.Embedding, needed: int, what: str) -> None:
    if needed > table.num_embeddings:
        raise ValueError(
            f"{what} needs {needed} positions but CLIP's text positional embedding (which CLIP4Clip's position table "
            f"copies) has {table.num_embeddings}; use fewer --max-frames"
        )


class MeanPooling(nn.Module):
    """meanP. Like every loose head it returns (per-frame sequence, pooled vector): the
    sequence is what token interaction (DRL) compares caption tokens with."""

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return frames, masked_mean_pool(frames, mask)


class LSTMPooling(nn.Module):
    """seqLSTM: a 1-layer LSTM over the real frames, residual, then meanP."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(width, width, num_layers=1, batch_first=True)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(frames.float(), lengths, batch_first=True, enforce_sorted=False)
        self.lstm.flatten_parameters()
        output, _ = self.lstm(packed)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=frames.shape[1])
        sequence = output.to(frames.dtype) + frames
        return sequence, masked_mean_pool(sequence, mask)


class TransformerPooling(nn.Module):
    """seqTransf: frame position embeddings + 4 transformer layers (from CLIP's text layers
    0-3 and positional embedding, as CLIP4Clip initialises them), residual, then meanP."""

    def __init__(self, clip: nn.Module, width: int, max_frames: int, layers: int = 4) -> None:
        super().__init__()
        self.frame_position = clip_positions(clip, width)
        check_positions(self.frame_position, max_frames, "seqTransf")
        self.blocks, self.heads = clip4clip_blocks(clip, width, layers)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(frames.shape[1], device=frames.device)
        x = frames + self.frame_position(positions)[None]
        attn_mask = key_padding_attn_mask(mask, self.heads, x.dtype)
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        sequence = x + frames
        return sequence, masked_mean_pool(sequence, mask)


class CrossEncoderScore(Similarity):
    """tightTransf as CLIP4Clip computes it (``modeling.py`` _cross_similarity, ``module_cross.py``).

    The caption's CLIP feature (one token) and the video's frame features are concatenated,
    position embeddings added (CLIP's text positions, copied at init), dropout 0.1, then 4
    QuickGELU transformer layers copied from CLIP's text layers 0-3; the pooler normalises
    every position, takes the first (the caption's), Linear -> QuickGELU, and
    ``similarity_dense`` (Linear -> 1) gives the score. CLIP4Clip's token-type embedding is
    commented out in its code, so there is none here either.

    Scores every text against every video: (texts x videos) sequences of 1 + T tokens, so
    it is the expensive head by design (no independent video index is possible).
    """

    EMBEDDING_DROPOUT = 0.1  # CLIP4Clip's cross_config hidden_dropout_prob
    normalises_text = False  # the caption's CLIP feature enters the sequence as it is
    reads_frames = True
    gathers_batch = False  # CLIP4Clip scores each rank's local batch (B x B passes); see train/step.py gather_batch
    uses_logit_scale = False  # the score is the logit

    def __init__(self, clip: nn.Module, width: int, max_frames: int, layers: int = 4) -> None:
        super().__init__()
        self.position = clip_positions(clip, width)
        check_positions(self.position, max_frames + 1, "tightTransf (caption + frames)")
        self.dropout = nn.Dropout(self.EMBEDDING_DROPOUT)
        self.blocks, self.heads = clip4clip_blocks(clip, width, layers)
        self.pool_norm = LayerNorm(width, eps=CLIP4CLIP_LAYER_NORM_EPS)
        self.pool_dense = nn.Linear(width, width)
        self.pool_activation = QuickGELU()
        self.score = nn.Linear(width, 1)  # CLIP4Clip's similarity_dense
        clip4clip_init_(nn.ModuleList([self.pool_norm, self.pool_dense, self.score]))

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: torch.Tensor) -> TrainingScores:
        return TrainingScores(self.every_pair(text.pooled, video.frames, video.mask))

    def pair_scorer(self, text: TextFeatures, video: VideoFeatures, chunks: ScoringChunks = DEFAULT_CHUNKS) -> PairScorer:
        # texts x videos sequences per pass: fewer texts at a time than the other similarities
        return CrossPairs(self, text.pooled, video.frames, video.mask, ScoringChunks(min(chunks.texts, 16), chunks.videos))

    def every_pair(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Every text against every video: (A, D) x (V, T, D) -> (A, V)."""
        num_texts, (num_videos, count, width) = text.shape[0], frames.shape
        text_rows = text[:, None, :].expand(num_texts, num_videos, width).reshape(-1, width)
        video_rows = frames[None].expand(num_texts, num_videos, count, width).reshape(-1, count, width)
        mask_rows = mask[None].expand(num_texts, num_videos, count).reshape(-1, count)
        return self.pairs(text_rows, video_rows, mask_rows).view(num_texts, num_videos)

    def pairs(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Explicit pairs: text i with video i, (P, D) x (P, T, D) -> (P,)."""
        count = frames.shape[1]
        x = torch.cat([text[:, None, :], frames], dim=1)
        x = self.dropout(x + self.position(torch.arange(count + 1, device=x.device))[None])
        pair_mask = torch.cat([torch.ones(mask.shape[0], 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        attn_mask = key_padding_attn_mask(pair_mask, self.heads, x.dtype)
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        pooled = self.pool_activation(self.pool_dense(self.pool_norm(x)[:, 0]))
        return self.score(pooled).squeeze(-1)


class CrossPairs(PairScorer):
    """The cross encoder over a split: explicit (caption, video) pairs, a bounded number of
    sequences per pass, whatever the rectangle or candidate list."""

    def __init__(
        self, cross: CrossEncoderScore, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor, chunks: ScoringChunks
    ) -> None:
        self.cross, self.text, self.frames, self.mask, self.chunks = cross, text, frames, mask, chunks

    def block(self, texts: slice, videos: slice) -> torch.Tensor:
        text_ids, video_ids = range(self.text.shape[0])[texts], range(self.frames.shape[0])[videos]
        device = self.text.device
        rows = []
        for t in range(0, len(text_ids), self.chunks.texts):
            row = text_ids[t : t + self.chunks.texts]
            parts = []
            for v in range(0, len(video_ids), self.chunks.videos):
                chunk = video_ids[v : v + self.chunks.videos]
                pair_texts = torch.tensor(row, device=device)[:, None].expand(-1, len(chunk))
                pair_videos = torch.tensor(chunk, device=device)[None].expand(len(row), -1)
                parts.append(self.pairs(pair_texts, pair_videos))
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)

    def for_texts(self, text_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.pairs(text_ids[:, None].expand_as(candidates), candidates)

    def for_videos(self, video_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.pairs(candidates, video_ids[:, None].expand_as(candidates))

    def pairs(self, text_index: torch.Tensor, video_index: torch.Tensor, pairs_per_pass: int = 4096) -> torch.Tensor:
        """Scores of (text_index[i], video_index[i]) for index tensors of any (equal) shape."""
        flat_texts, flat_videos = text_index.reshape(-1), video_index.reshape(-1)
        scores = []
        for start in range(0, flat_texts.numel(), pairs_per_pass):
            texts, videos = flat_texts[start : start + pairs_per_pass], flat_videos[start : start + pairs_per_pass]
            scores.append(self.cross.pairs(self.text[texts], self.frames[videos], self.mask[videos]).float())
        return torch.cat(scores).view(text_index.shape)


def build_video_pooling(head: str, clip: nn.Module, width: int, max_frames: int) -> nn.Module:
    if head == "meanP":
        return MeanPooling()
    if head == "seqLSTM":
        return LSTMPooling(width)
    if head == "seqTransf":
        return TransformerPooling(clip, width, max_frames)
    raise ValueError(f"unknown loose head {head!r}; choose from {LOOSE_HEADS}")
