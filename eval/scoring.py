"""Score an encoded split in blocks, for any head, and turn it into metrics."""

from __future__ import annotations

import torch

from eval.encode import EncodedSplit
from eval.metrics import summarize, t2v_ranks, v2t_ranks
from train.model import VideoFeatures


def score_blocks(model: torch.nn.Module, split: EncodedSplit, device: torch.device, video_chunk: int = 256):
    """Two block functions over the split: captions a..b x all videos, videos a..b x all captions.

    Loose heads: cosine of normalised features (the logit scale is a monotone factor and
    does not change ranks). Tight head: the cross encoder on every pair in the block,
    ``video_chunk`` videos at a time so memory stays bounded.
    """
    text = split.text.to(device)
    if split.video_pooled is not None:
        videos = split.video_pooled.to(device)
        return (lambda a, b: text[a:b] @ videos.T), (lambda a, b: videos[a:b] @ text.T)
    frames, mask = split.video_frames.to(device), split.video_mask.to(device)

    @torch.no_grad()
    def tight(texts: torch.Tensor, first: int, last: int) -> torch.Tensor:
        parts = [
            model.similarity(
                texts, VideoFeatures(frames[v : min(v + video_chunk, last)], mask[v : min(v + video_chunk, last)], None)
            ).float()
            for v in range(first, last, video_chunk)
        ]
        return torch.cat(parts, dim=1)

    num_videos = frames.shape[0]
    return (lambda a, b: tight(text[a:b], 0, num_videos)), (lambda a, b: tight(text, a, b).T)


def split_metrics(model: torch.nn.Module, split: EncodedSplit, device: torch.device, block_size: int = 1024) -> dict:
    text_block, video_block = score_blocks(model, split, device)
    t2v = t2v_ranks(text_block, split.caption_to_video, block_size)
    v2t = v2t_ranks(video_block, split.caption_to_video, len(split.keys), block_size)
    return {"t2v": summarize(t2v), "v2t": summarize(v2t), "t2v_ranks": t2v, "v2t_ranks": v2t}
