"""One residual block of CLIP's frozen ViT, run on token groups with their own attention rules.

TempMe (token merging), DGL (global-local prompts) and the dual-attention seed all keep CLIP's
weights and change *which tokens attend to which*: groups of tokens (a frame, later a segment of
frames) attend within the group, optional per-video global prompts attend to every token of their
video, and every group also sees its video's prompts. Each token carries a mass (TempMe's "size":
how many original tokens it stands for); keys are biased by log(mass) (ToMe's proportional
attention), which makes a massless token (a padded frame's) invisible.

The block's own modules are used as they are (``ln_1``, the packed q/k/v projection, which LoRA
parametrises in place, ``out_proj``, ``ls_1``, ``ln_2``, ``mlp``, ``ls_2``), so the frozen
weights are never copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class BlockOutput:
    tokens: torch.Tensor  # (G, N, D) after attention + residual (the MLP is run by ``finish``)
    prompts: torch.Tensor | None  # (B, P, D) likewise
    metric: torch.Tensor  # (G, N, head_dim) keys averaged over heads: ToMe's similarity metric


def _heads(block: nn.Module) -> int:
    return block.attn.num_heads


def _project(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., N, D) -> q, k, v as (..., heads, N, head_dim)."""
    attn = block.attn
    heads = _heads(block)
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    qkv = qkv.unflatten(-1, (3, heads, x.shape[-1] // heads)).movedim(-3, 0).transpose(-2, -3)
    return qkv[0], qkv[1], qkv[2]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v with a (..., keys) bias broadcast over heads and queries."""
    scale = q.shape[-1] ** -0.5
    scores = (q * scale) @ k.transpose(-1, -2) + key_bias[..., None, None, :].to(q.dtype)
    return scores.softmax(dim=-1) @ v


def _merge_heads(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(..., heads, N, head_dim) -> out_proj((..., N, D))."""
    merged = x.transpose(-2, -3).flatten(-2)
    return F.linear(merged, block.attn.out_proj.weight, block.attn.out_proj.bias)


def mass_bias(mass: torch.Tensor) -> torch.Tensor:
    """log(mass) per key; a group with no mass at all (a padded frame on its own) attends
    normally instead, so its rows never become all -inf (its output is never used)."""
    bias = mass.clamp(min=0).log()
    empty = mass.sum(-1, keepdim=True) <= 0
    return torch.where(empty, torch.zeros_like(bias), bias)


def attention(block: nn.Module, tokens: torch.Tensor, mass: torch.Tensor, prompts: torch.Tensor | None = None) -> BlockOutput:
    """The attention half of a block over G token groups of B videos (G = B x groups per video).

    Without prompts each group attends within itself. With prompts (B, P, D): each group attends
    to its video's prompts and its own tokens; the prompts attend to themselves and to every
    token of their video (DGL's global-local video attention). Prompts have mass 1.
    """
    groups = tokens.shape[0]
    q, k, v = _project(block, block.ln_1(tokens))
    bias = mass_bias(mass)
    if prompts is None:
        out = _attend(q, k, v, bias)
        return BlockOutput(tokens + block.ls_1(_merge_heads(block, out)), None, k.mean(dim=-3))
    videos, count = prompts.shape[:2]
    per_video = groups // videos
    pq, pk, pv = _project(block, block.ln_1(prompts))  # (B, H, P, hd)
    # groups: keys = their video's prompts, then their own tokens
    video_of_group = torch.arange(groups, device=tokens.device) // per_video
    group_keys = torch.cat([pk[video_of_group], k], dim=-2)
    group_values = torch.cat([pv[video_of_group], v], dim=-2)
    group_bias = torch.cat([bias.new_zeros(groups, count), bias], dim=-1)
    token_out = _attend(q, group_keys, group_values, group_bias)
    # prompts: keys = the prompts, then every token of the video (massless ones hidden)
    heads, head_dim = k.shape[1], k.shape[-1]
    video_keys = k.unflatten(0, (videos, per_video)).transpose(1, 2).reshape(videos, heads, -1, head_dim)
    video_values = v.unflatten(0, (videos, per_video)).transpose(1, 2).reshape(videos, heads, -1, head_dim)
    video_bias = mass.clamp(min=0).log().reshape(videos, -1)
    prompt_out = _attend(
        pq, torch.cat([pk, video_keys], dim=-2), torch.cat([pv, video_values], dim=-2), torch.cat([bias.new_zeros(videos, count), video_bias], dim=-1)
    )
    return BlockOutput(
        tokens + block.ls_1(_merge_heads(block, token_out)), prompts + block.ls_1(_merge_heads(block, prompt_out)), k.mean(dim=-3)
    )


def finish(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The MLP half of a block."""
    return x + block.ls_2(block.mlp(block.ln_2(x)))


def frame_embeddings(visual: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) normalised pixels -> (N, 1 + patches, D) tokens after ``ln_pre``, as
    open_clip's VisionTransformer embeds them (class token first)."""
    return visual._embeds(pixels)


def project_tokens(visual: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``ln_post`` then the output projection, for any (..., D) tokens."""
    x = visual.ln_post(x)
    return x @ visual.proj if visual.proj is not None else x


def check_plain_vit(visual: nn.Module, what: str) -> None:
    """These encoders run open_clip's ViT block by block: refuse towers they would misread."""
    if not hasattr(visual, "transformer") or not hasattr(visual, "class_embedding"):
        raise ValueError(f"{what} needs a ViT vision tower (class token + transformer)")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "final_ln_after_pool", False) or visual.pool_type != "tok":
        raise ValueError(f"{what} reads the class token after ln_post: a ViT with attention pooling or pool_type "
                         f"{visual.pool_type!r} is not supported")  # fmt: skip
    if not visual.transformer.batch_first:
        raise ValueError(f"{what} expects open_clip's batch-first transformer")
