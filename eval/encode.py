"""Encode a test split once: every video's frames and every caption, spread over DDP ranks.

Each rank reads a disjoint share of the shards (rank, rank + world, ...), encodes it, and
the features are all-gathered so every rank holds the whole split. Ranks may hold unequal
numbers of videos; the only collective is the final gather, which all ranks reach after
their own share, so none waits alone in a collective while another evaluates (CLIP4Clip
evaluated on rank 0 only and let the others time out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm import tqdm

from model.clip_decode import decode_clip
from model.frame_rule import FrameRule
from model.trained_model import inference_autocast
from runtime.distributed import is_distributed
from runtime.logs import progress_enabled
from shards.reader import ReadErrors, ReadPolicy, iter_samples
from shards.sample_format import usable_captions


@dataclass
class EncodedSplit:
    keys: list[str]  # one per video, sorted
    captions: list[str]  # every caption of every video, grouped by video in key order
    caption_to_video: torch.Tensor  # (C,) video index of each caption
    text: torch.Tensor  # (C, D)
    text_tokens: torch.Tensor | None  # (C, L, D) per-token features, for token interaction (DRL)
    text_mask: torch.Tensor | None  # (C, L)
    video_pooled: torch.Tensor | None  # (N, D) for loose heads
    video_frames: torch.Tensor  # (N, T, D)
    video_mask: torch.Tensor  # (N, T)
    skipped: dict
    # EERCF's finer granularities: CLIP's frame features and every frame's patch tokens (fp16: 49 x
    # the frame features for ViT-B/32, halved), only for similarities that read them
    video_clip_frames: torch.Tensor | None = None  # (N, T, D)
    video_patches: torch.Tensor | None = None  # (N, T, P, D) float16


@torch.no_grad()
def encode_split(
    model: torch.nn.Module,
    urls: list[str],
    tokenize: Callable,
    device: torch.device,
    max_frames: int = 12,
    max_words: int = 32,
    image_size: int = 224,
    batch_size: int = 32,
    read_policy: ReadPolicy | None = None,
    frame_rule: FrameRule | None = None,
) -> EncodedSplit:
    """``frame_rule``: which stored frames to keep (model/frame_rule.py); default the builder's default."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)
    was_training = model.training
    model.eval()
    errors = ReadErrors()
    local: dict[str, dict] = {}
    skipped = {"incomplete": 0, "undecodable": 0, "no_caption": 0}
    pending: list[tuple[str, list[str], torch.Tensor, torch.Tensor]] = []

    def flush() -> None:
        if not pending:
            return
        frames = torch.stack([p[2] for p in pending]).to(device, non_blocking=True)
        masks = torch.stack([p[3] for p in pending]).to(device)
        captions = [c for p in pending for c in p[1]]
        with inference_autocast(device):
            video = model.encode_video(frames, masks)
            texts = [
                model.encode_text(tokenize(captions[i : i + 256], context_length=max_words).to(device))
                for i in range(0, len(captions), 256)
            ]
        text = torch.cat([t.pooled for t in texts])
        tokens = torch.cat([t.tokens for t in texts]) if texts[0].tokens is not None else None
        token_mask = torch.cat([t.mask for t in texts]) if texts[0].mask is not None else None
        offset = 0
        for i, (key, caps, _, mask) in enumerate(pending):
            span = slice(offset, offset + len(caps))
            local[key] = {
                "captions": caps,
                "text": text[span].float().cpu(),
                "tokens": None if tokens is None else tokens[span].float().cpu(),
                "token_mask": None if token_mask is None else token_mask[span].cpu(),
                "pooled": None if video.pooled is None else video.pooled[i].float().cpu(),
                "frames": video.frames[i].float().cpu(),
                "mask": mask,
                "clip_frames": None if video.clip_frames is None else video.clip_frames[i].float().cpu(),
                "patches": None if video.patches is None else video.patches[i].half().cpu(),
            }
            offset += len(caps)
        pending.clear()

    samples = iter_samples(urls[rank::world], errors.handler, read_policy)
    if progress_enabled(rank == 0):  # rank 0's share, as a count of videos (the total is not known up front)
        samples = tqdm(samples, desc=f"encode (rank 0 of {world})", unit="video", dynamic_ncols=True)
    for sample in samples:
        captions, problem = usable_captions(sample)
        if problem:
            skipped[problem] += 1
            continue
        try:
            frames, mask = decode_clip(sample, max_frames, image_size, frame_rule)
        except (RuntimeError, ValueError):
            skipped["undecodable"] += 1
            continue
        pending.append((sample["__key__"], captions, frames, mask))
        if len(pending) == batch_size:
            flush()
    flush()
    skipped["unreadable_shards"] = [url for url, _ in errors.errors]
    shares = [(local, skipped)]
    if world > 1:
        shares = [None] * world
        dist.all_gather_object(shares, (local, skipped))
    merged: dict[str, dict] = {}
    total_skipped = {"incomplete": 0, "undecodable": 0, "no_caption": 0, "unreadable_shards": []}
    for share, share_skipped in shares:
        merged.update(share)
        for name, value in share_skipped.items():
            total_skipped[name] += value
    if was_training:
        model.train()
    keys = sorted(merged)
    if not keys:
        raise ValueError(f"no readable samples in {len(urls)} shard(s); skipped: {total_skipped}")
    items = [merged[k] for k in keys]
    return EncodedSplit(
        keys=keys,
        captions=[c for item in items for c in item["captions"]],
        caption_to_video=torch.tensor([i for i, item in enumerate(items) for _ in item["captions"]]),
        text=torch.cat([item["text"] for item in items]),
        text_tokens=None if items[0]["tokens"] is None else torch.cat([item["tokens"] for item in items]),
        text_mask=None if items[0]["token_mask"] is None else torch.cat([item["token_mask"] for item in items]),
        video_pooled=None if items[0]["pooled"] is None else torch.stack([item["pooled"] for item in items]),
        video_frames=torch.stack([item["frames"] for item in items]),
        video_mask=torch.stack([item["mask"] for item in items]),
        skipped=total_skipped,
        video_clip_frames=None if items[0]["clip_frames"] is None else torch.stack([item["clip_frames"] for item in items]),
        video_patches=None if items[0]["patches"] is None else torch.stack([item["patches"] for item in items]),
    )
