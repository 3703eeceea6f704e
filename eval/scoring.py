"""Score an encoded split in blocks, for any head and similarity, and turn it into metrics.

``SplitScorer`` prepares each side once (EMCL's transform, DRL's normalised and weighted
token sets, coarse vectors) and then scores any rectangle of captions x videos, or any list of
explicit (caption, video) pairs, in chunks small enough that memory stays bounded however
large the split: token interaction materialises (texts, videos, tokens, frames) and the
cross encoder (texts x videos) sequences, so neither may see a whole block at once.
Rescoring a query's candidates never copies the query once per candidate.
"""

from __future__ import annotations

import torch

from eval.encode import EncodedSplit
from eval.metrics import summarize, t2v_ranks, v2t_ranks
from train.emcl import EVAL_BLOCK
from train.interaction import all_pairs, text_against_candidates, video_against_candidates
from train.model import CLIP4Clip, TextFeatures, VideoFeatures


class SplitScorer:
    def __init__(self, model: CLIP4Clip, split: EncodedSplit, device: torch.device, text_chunk: int = 64, video_chunk: int = 256) -> None:
        self.model, self.device = model, device
        # the cross encoder runs texts x videos sequences per chunk: fewer texts at a time
        self.text_chunk, self.video_chunk = (text_chunk if model.is_loose else min(text_chunk, 16)), video_chunk
        # t2v/v2t block offsets stay multiples of EMCL-Net's 32 (eval/metrics.py passes block_size multiples)
        self.num_texts, self.num_videos = len(split.captions), len(split.keys)
        with torch.no_grad():
            frames, mask = split.video_frames.to(device), split.video_mask.to(device)
            text = split.text.to(device)
            video = VideoFeatures(frames, mask, split.video_pooled.to(device) if split.video_pooled is not None else None)
            self.coarse_text, self.coarse_video = model.coarse_vectors(text, video)
            if model.uses_tokens:
                self.text_set, self.video_set = model.token_sides(
                    TextFeatures(text, split.text_tokens.to(device), split.text_mask.to(device)), video
                )
            elif model.needs_frames:  # the cross encoder and EMCL-Net read frames and the raw caption feature
                self.text, self.frames, self.mask = text, frames, mask
            else:
                self.text_vectors, self.video_vectors = text, video.pooled

    @torch.no_grad()
    def coarse(self, texts: slice, videos: slice) -> torch.Tensor:
        """EERCF's first stage: caption vector vs text-agnostic video vector."""
        return (self.coarse_text[texts] @ self.coarse_video[videos].T).float()

    @torch.no_grad()
    def fine(self, texts: slice, videos: slice) -> torch.Tensor:
        """The model's own similarity (without the logit scale: it does not change ranks)."""
        if not self.model.needs_frames:
            return (self.text_vectors[texts] @ self.video_vectors[videos].T).float()
        if self.model.uses_emcl:  # EMCL-Net's test-time blocks of 32 x 32, aligned to the split's order
            if any((part.start or 0) % EVAL_BLOCK for part in (texts, videos)):
                raise ValueError(f"EMCL scores blocks of {EVAL_BLOCK}: score from offsets that are multiples of it (--block-size)")
            return self.model.emcl.blockwise(self.text[texts], self.frames[videos], self.mask[videos]).float()
        text_ids = range(self.num_texts)[texts]
        video_ids = range(self.num_videos)[videos]
        rows = []
        for t in range(0, len(text_ids), self.text_chunk):
            row_texts = text_ids[t : t + self.text_chunk]
            text_set = self.text_set.select(slice(row_texts.start, row_texts.stop)) if self.model.uses_tokens else None  # a view
            parts = []
            for v in range(0, len(video_ids), self.video_chunk):
                chunk_videos = video_ids[v : v + self.video_chunk]
                if text_set is not None:
                    parts.append(all_pairs(text_set, self.video_set.select(slice(chunk_videos.start, chunk_videos.stop))).float())
                else:
                    pair_texts = torch.tensor(row_texts, device=self.device)[:, None].expand(-1, len(chunk_videos))
                    pair_videos = torch.tensor(chunk_videos, device=self.device)[None].expand(len(row_texts), -1)
                    parts.append(self._cross_pairs(pair_texts, pair_videos))
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)

    def _cross_pairs(self, text_index: torch.Tensor, video_index: torch.Tensor, pairs_per_pass: int = 4096) -> torch.Tensor:
        """The cross encoder on explicit pairs (any shape), a bounded number of sequences at a time."""
        flat_texts, flat_videos = text_index.reshape(-1), video_index.reshape(-1)
        scores = []
        for start in range(0, flat_texts.numel(), pairs_per_pass):
            texts, videos = flat_texts[start : start + pairs_per_pass], flat_videos[start : start + pairs_per_pass]
            pair_video = VideoFeatures(self.frames[videos], self.mask[videos], None)
            scores.append(self.model.pair_scores(TextFeatures(self.text[texts]), pair_video).float())
        return torch.cat(scores).view(text_index.shape)

    def _candidate_rows(self, candidates: torch.Tensor, per_candidate: int) -> int:
        """Queries per pass so that gathered candidate features stay near 16M floats (64 MB):
        large gathers cost page faults, not arithmetic."""
        return max(1, (16 << 20) // max(1, candidates.shape[1] * per_candidate))

    @torch.no_grad()
    def fine_for_texts(self, text_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Fine scores of each caption text_ids[i] against its own videos candidates[i] -> (A, k)."""
        if self.model.uses_tokens:
            step = self._candidate_rows(candidates, self.video_set.features[0].numel())
            return torch.cat(
                [
                    text_against_candidates(self.text_set.select(text_ids[r : r + step]), self.video_set.select(candidates[r : r + step]))
                    for r in range(0, len(text_ids), step)
                ]
            ).float()
        if self.model.uses_emcl:  # EM over each query and its own candidates
            return torch.cat([self.model.emcl.logits(self.text[t : t + 1], self.frames[c], self.mask[c]) for t, c in zip(text_ids, candidates, strict=True)]).float()
        if self.model.is_loose:
            return torch.einsum("ad,akd->ak", self.text_vectors[text_ids], self.video_vectors[candidates]).float()
        return self._cross_pairs(text_ids[:, None].expand_as(candidates), candidates)

    @torch.no_grad()
    def fine_for_videos(self, video_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Fine scores of each video video_ids[i] against its own captions candidates[i] -> (B, k)."""
        if self.model.uses_tokens:
            step = self._candidate_rows(candidates, self.text_set.features[0].numel())
            return torch.cat(
                [
                    video_against_candidates(self.video_set.select(video_ids[r : r + step]), self.text_set.select(candidates[r : r + step]))
                    for r in range(0, len(video_ids), step)
                ]
            ).float()
        if self.model.uses_emcl:
            return torch.cat([self.model.emcl.logits(self.text[c], self.frames[v : v + 1], self.mask[v : v + 1]).T for v, c in zip(video_ids, candidates, strict=True)]).float()
        if self.model.is_loose:
            return torch.einsum("bd,bkd->bk", self.video_vectors[video_ids], self.text_vectors[candidates]).float()
        return self._cross_pairs(candidates, video_ids[:, None].expand_as(candidates))


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
