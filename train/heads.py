"""CLIP4Clip's similarity heads: how frame features and a caption become one score.

Loose heads (meanP, seqLSTM, seqTransf) turn frames into one video vector, so videos and
texts are encoded independently and scored by a cosine; tightTransf scores each
(text, video) pair with a cross encoder. All heads respect the frame mask: padded frames
of short clips never contribute.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, Transformer
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

LOOSE_HEADS = ("meanP", "seqLSTM", "seqTransf")
HEADS = (*LOOSE_HEADS, "tightTransf")


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


def _text_layers_like(clip: nn.Module, width: int, layers: int) -> tuple[nn.ModuleList, int]:
    """The first ``layers`` CLIP text blocks (CLIP4Clip's initialisation) when widths agree,
    fresh blocks otherwise. Returns the blocks and their head count."""
    text_blocks = clip.transformer.resblocks
    if clip.transformer.width == width and len(text_blocks) >= layers:
        blocks = nn.ModuleList(copy.deepcopy(text_blocks[i]) for i in range(layers))
        return blocks, blocks[0].attn.num_heads
    heads = max(1, width // 64)
    fresh = Transformer(width=width, layers=layers, heads=heads)
    return fresh.resblocks, heads


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
        self.frame_position = nn.Embedding(max(max_frames, 1), width)
        text_positions = clip.positional_embedding
        if text_positions.shape[1] == width and text_positions.shape[0] >= max_frames:
            with torch.no_grad():
                self.frame_position.weight.copy_(text_positions[:max_frames])
        else:
            nn.init.normal_(self.frame_position.weight, std=0.01)
        self.blocks, self.heads = _text_layers_like(clip, width, layers)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(frames.shape[1], device=frames.device)
        x = frames + self.frame_position(positions)[None]
        attn_mask = key_padding_attn_mask(mask, self.heads, x.dtype)
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        sequence = x + frames
        return sequence, masked_mean_pool(sequence, mask)


class CrossEncoderScore(nn.Module):
    """tightTransf: [text feature; frames] through 4 joint layers, a linear score per pair.

    Scores every text against every video: (texts x videos) sequences of 1 + T tokens, so
    it is the expensive head by design (no independent video index is possible).
    """

    def __init__(self, clip: nn.Module, width: int, max_frames: int, layers: int = 4) -> None:
        super().__init__()
        self.position = nn.Embedding(max_frames + 1, width)
        self.modality = nn.Embedding(2, width)
        nn.init.normal_(self.position.weight, std=0.01)
        nn.init.normal_(self.modality.weight, std=0.01)
        heads = max(1, width // 64)
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))
        self.heads = heads
        self.score = nn.Linear(width, 1)

    def forward(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
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
        types = torch.cat([torch.zeros(1, dtype=torch.long), torch.ones(count, dtype=torch.long)]).to(x.device)
        x = x + self.modality(types)[None] + self.position(torch.arange(count + 1, device=x.device))[None]
        pair_mask = torch.cat([torch.ones(mask.shape[0], 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        attn_mask = key_padding_attn_mask(pair_mask, self.heads, x.dtype)
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return self.score(x[:, 0]).squeeze(-1)


def build_video_pooling(head: str, clip: nn.Module, width: int, max_frames: int) -> nn.Module:
    if head == "meanP":
        return MeanPooling()
    if head == "seqLSTM":
        return LSTMPooling(width)
    if head == "seqTransf":
        return TransformerPooling(clip, width, max_frames)
    raise ValueError(f"unknown loose head {head!r}; choose from {HEADS}")
