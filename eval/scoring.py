"""Score an encoded split in blocks, for any head and similarity, and turn it into metrics.

``SplitScorer`` prepares each side once through the model's similarity (its ``pair_scorer``:
EMCL's transform, DRL's normalised and weighted token sets, the cross encoder's pair batches;
model/similarity.py), plus EERCF's coarse vectors, and then scores any rectangle of captions x
videos, or each query's own candidates, in chunks small enough that memory stays bounded
however large the split. Rescoring a query's candidates never copies the query once per
candidate.
"""

from __future__ import annotations

import torch

from eval.encode import EncodedSplit
from eval.metrics import summarize, t2v_ranks, v2t_ranks
from model.clip4clip import CLIP4Clip
from model.features import TextFeatures, VideoFeatures
from model.similarity import ScoringChunks


class SplitScorer:
    def __init__(self, model: CLIP4Clip, split: EncodedSplit, device: torch.device, text_chunk: int = 64, video_chunk: int = 256) -> None:
        self.device = device
        self.num_texts, self.num_videos = len(split.captions), len(split.keys)
        with torch.no_grad():
            frames, mask = split.video_frames.to(device), split.video_mask.to(device)
            tokens = split.text_tokens.to(device) if split.text_tokens is not None else None
            token_mask = split.text_mask.to(device) if split.text_mask is not None else None
            text = TextFeatures(split.text.to(device), tokens, token_mask)
            video = VideoFeatures(frames, mask, split.video_pooled.to(device) if split.video_pooled is not None else None,
                                  clip_frames=None if split.video_clip_frames is None else split.video_clip_frames.to(device),
                                  patches=None if split.video_patches is None else split.video_patches.to(device))  # fmt: skip
            self.coarse_text, self.coarse_video = model.coarse_vectors(text.pooled, video)
            self.pairs = model.similarity.pair_scorer(text, video, ScoringChunks(text_chunk, video_chunk))

    @torch.no_grad()
    def coarse(self, texts: slice, videos: slice) -> torch.Tensor:
        """EERCF's first stage: caption vector vs text-agnostic video vector."""
        return (self.coarse_text[texts] @ self.coarse_video[videos].T).float()

    @torch.no_grad()
    def fine(self, texts: slice, videos: slice) -> torch.Tensor:
        """The model's own similarity (without the logit scale: it does not change ranks)."""
        return self.pairs.block(texts, videos)

    @torch.no_grad()
    def fine_for_texts(self, text_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Fine scores of each caption text_ids[i] against its own videos candidates[i] -> (A, k)."""
        return self.pairs.for_texts(text_ids, candidates)

    @torch.no_grad()
    def fine_for_videos(self, video_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Fine scores of each video video_ids[i] against its own captions candidates[i] -> (B, k)."""
        return self.pairs.for_videos(video_ids, candidates)


def score_blocks(model: CLIP4Clip, split: EncodedSplit, device: torch.device):
    """Two block functions over the split: captions a..b x all videos, videos a..b x all captions."""
    return fine_blocks(SplitScorer(model, split, device))


def fine_blocks(scorer: SplitScorer):
    """``score_blocks`` for a scorer already built (its prepared sides are reused)."""
    every_video, every_text = slice(0, scorer.num_videos), slice(0, scorer.num_texts)
    return (lambda a, b: scorer.fine(slice(a, b), every_video)), (lambda a, b: scorer.fine(every_text, slice(a, b)).T)


def split_metrics(model: CLIP4Clip, split: EncodedSplit, device: torch.device, block_size: int = 1024) -> dict:
    text_block, video_block = score_blocks(model, split, device)
    t2v = t2v_ranks(text_block, split.caption_to_video, block_size)
    v2t = v2t_ranks(video_block, split.caption_to_video, len(split.keys), block_size)
    return {"t2v": summarize(t2v), "v2t": summarize(v2t), "t2v_ranks": t2v, "v2t_ranks": v2t}
