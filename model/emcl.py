"""EMCL as EMCL-Net computes it (jpthu17/EMCL ``video_retrieval/EMCL-Net``: ``tvr/models/modeling.py``
``get_logits`` and ``tvr/models/until_module.py`` ``Emcl``).

For a block of A captions and B videos:

1. **Text-conditioned frame pooling.** Each caption's CLIP feature (unnormalised) weighs each
   video's frames (after the frame aggregation, seqTransf by default) by a softmax of their
   dot products over ``pool_temperature`` (EMCL-Net's ``--temp 3``): one video vector per
   (caption, video) pair, (A, B, D).
2. **EM over channels.** The A*B pair vectors and the A captions are stacked into N rows of D
   channels. The D channels are EM's data points and the K bases live in the N-dimensional
   space of rows (N x K): E-step ``z = softmax(X^T mu / lambda)`` over K, then z normalised over
   the D channels; M-step ``mu = X z``, columns L2-normalised. ``iterations`` rounds without
   gradient, started from the running state repeated over the rows.
3. **Reconstruction.** ``X + beta * mu z^T`` with the last round's mu and z (no extra E-step);
   rows are then L2-normalised and each caption is scored against its own pair vectors.
4. **Running state.** One number per basis, (1, K), initialised from N(0, 2/K) and normalised
   over its single row (so +-1); after each training block it moves towards the batch bases'
   mean over rows with ``momentum``. It is never renormalised after that. EMCL-Net keeps it
   outside the state dict (its checkpoints do not carry it); here it is a buffer, so a
   checkpoint of this project resumes it exactly.

At test time EMCL-Net scores blocks of 32 captions x 32 videos, EM running per block with the
running state frozen; the evaluator does the same (eval/scoring.py). Padding (model/padding.py):
EMCL-Net multiplies the frame mask in *after* the softmax, so padded frames of a short clip take
weight mass (their features depend on what the loader padded with); ``--padding-rule reference``
does that, ``masked`` (the default) gives them none. On full-length clips (every MSR-VTT test clip
has 12 frames) the two are identical.
"""

from __future__ import annotations

import math

import torch

from model.features import TextFeatures, VideoFeatures
from model.padding import is_reference
from model.similarity import DEFAULT_CHUNKS, PairScorer, ScoringChunks, Similarity, TrainingScores

EVAL_BLOCK = 32  # EMCL-Net's _run_on_single_gpu mini_batch


class EMCLNet(Similarity):
    normalises_text = False  # EMCL-Net pools frames with, and runs EM on, CLIP's caption feature as it is
    reads_frames = True

    def __init__(
        self,
        bases: int = 32,
        iterations: int = 9,
        beta: float = 3.0,
        momentum: float = 0.9,
        lamda: float = 1.0,
        pool_temperature: float = 3.0,
        padding_rule: str = "masked",
    ) -> None:
        super().__init__()
        self.padding_rule = padding_rule
        self.iterations, self.beta, self.momentum = iterations, beta, momentum
        self.lamda, self.pool_temperature = lamda, pool_temperature
        generator = torch.Generator().manual_seed(0)  # the same start on every rank without a broadcast
        mu = torch.randn(1, bases, generator=generator) * math.sqrt(2.0 / bases)
        self.register_buffer("mu", mu / (1e-6 + mu.norm(dim=0, keepdim=True)))

    def pool(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(A, D) captions x (B, T, D) frames -> (A, B, D) text-conditioned video vectors."""
        logits = torch.einsum("ad,btd->abt", text, frames) / self.pool_temperature
        if is_reference(self.padding_rule):  # EMCL-Net: softmax over every frame, then the mask (model/padding.py)
            weights = torch.softmax(logits, dim=-1) * mask[None].to(logits.dtype)
        else:
            weights = torch.softmax(logits.masked_fill(~mask[None], float("-inf")), dim=-1)
        return torch.einsum("abt,btd->abd", weights, frames)

    def expectation_maximisation(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) rows -> the last round's bases (N, K) and channel assignments (D, K), no gradient."""
        with torch.no_grad():
            mu = self.mu.to(rows.dtype).expand(rows.shape[0], -1)
            for _ in range(self.iterations):
                z = torch.softmax(rows.T @ mu / self.lamda, dim=1)  # (D, K)
                z = z / (1e-6 + z.sum(dim=0, keepdim=True))
                mu = rows @ z  # (N, K)
                mu = mu / (1e-6 + mu.norm(dim=0, keepdim=True))
        return mu, z

    def logits(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cosines (A, B) of a block of captions (A, D, unnormalised CLIP features) and videos
        (B, T, D frame features). In training mode the running state moves."""
        pairs = self.pool(text, frames, mask)
        num_texts, num_videos, width = pairs.shape
        rows = torch.cat([pairs.reshape(-1, width), text]).float()
        mu, z = self.expectation_maximisation(rows.detach())
        if self.training:
            with torch.no_grad():
                self.mu.mul_(self.momentum).add_((1 - self.momentum) * mu.mean(dim=0, keepdim=True))
        out = rows + self.beta * (mu @ z.T)
        out = out / out.norm(dim=-1, keepdim=True)
        video_rows, text_rows = out[: num_texts * num_videos].view(num_texts, num_videos, width), out[num_texts * num_videos :]
        return torch.einsum("ad,abd->ab", text_rows, video_rows)

    def blockwise(self, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor, block: int = EVAL_BLOCK) -> torch.Tensor:
        """Test-time scores as EMCL-Net computes them: EM per block of ``block`` captions x
        ``block`` videos, in the order given."""
        rows = []
        for a in range(0, text.shape[0], block):
            rows.append(torch.cat([self.logits(text[a : a + block], frames[b : b + block], mask[b : b + block])
                                   for b in range(0, frames.shape[0], block)], dim=1))  # fmt: skip
        return torch.cat(rows)

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: torch.Tensor) -> TrainingScores:
        return TrainingScores(logit_scale * self.logits(text.pooled, video.frames, video.mask))

    def pair_scorer(self, text: TextFeatures, video: VideoFeatures, chunks: ScoringChunks = DEFAULT_CHUNKS) -> PairScorer:
        return EMCLPairs(self, text.pooled, video.frames, video.mask)


class EMCLPairs(PairScorer):
    """Test-time scoring as EMCL-Net does it: EM per 32 x 32 block, aligned to the split's order;
    a query's rerank candidates are EM'd as one block with it."""

    def __init__(self, emcl: EMCLNet, text: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> None:
        self.emcl, self.text, self.frames, self.mask = emcl, text, frames, mask

    def block(self, texts: slice, videos: slice) -> torch.Tensor:
        """Any rectangle, with the scores EMCL-Net's 32 x 32 grid gives its pairs: the enclosing
        grid-aligned blocks are computed and the rectangle cut out, so a single caption's row (the
        HTML report) equals its row in the metrics' blocks."""
        (t0, t1, _), (v0, v1, _) = texts.indices(self.text.shape[0]), videos.indices(self.frames.shape[0])

        def grid(start: int, stop: int, size: int) -> tuple[int, int]:  # the whole blocks holding [start, stop)
            return start - start % EVAL_BLOCK, min(size, -(-stop // EVAL_BLOCK) * EVAL_BLOCK)

        (ta, tb), (va, vb) = grid(t0, t1, self.text.shape[0]), grid(v0, v1, self.frames.shape[0])
        scores = self.emcl.blockwise(self.text[ta:tb], self.frames[va:vb], self.mask[va:vb])
        return scores[t0 - ta : t1 - ta, v0 - va : v1 - va].float()

    def for_texts(self, text_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.emcl.logits(self.text[t : t + 1], self.frames[c], self.mask[c])
                          for t, c in zip(text_ids, candidates, strict=True)]).float()  # fmt: skip

    def for_videos(self, video_ids: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.emcl.logits(self.text[c], self.frames[v : v + 1], self.mask[v : v + 1]).T
                          for v, c in zip(video_ids, candidates, strict=True)]).float()  # fmt: skip
