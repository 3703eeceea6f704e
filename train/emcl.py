"""EMCL: expectation-maximisation over the joint video/text embeddings before the cosine.

The stacked [video; text] embeddings of a batch are explained by K unit-norm bases, found by
a few EM iterations run without gradient (E-step: softmax of X.mu / lambda over the bases;
M-step: mu = X^T z, columns L2-normalised), starting from running bases kept with momentum.
Each embedding then gets beta times its low-rank reconstruction z mu^T added back, which
pulls a video and its captions towards the same shared subspace.

At test time the running bases are used as they are, with one E-step per embedding. That
makes the transform a function of each vector alone, so a video's embedding can be computed
once and indexed, independent of which other videos or texts are in the batch (EMCL's own
code re-runs EM per evaluation batch; this is a deliberate difference, see the README).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EMSubspace(nn.Module):
    def __init__(
        self, width: int, bases: int = 32, iterations: int = 9, beta: float = 3.0, momentum: float = 0.9, temperature: float = 0.1
    ) -> None:
        super().__init__()
        self.iterations, self.beta, self.momentum, self.temperature = iterations, beta, momentum, temperature
        generator = torch.Generator().manual_seed(0)  # same bases on every rank without a broadcast
        self.register_buffer("bases", F.normalize(torch.randn(width, bases, generator=generator), dim=0))

    def _assign(self, x: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x @ bases / self.temperature, dim=1)

    @torch.no_grad()
    def _expectation_maximisation(self, x: torch.Tensor) -> torch.Tensor:
        bases = self.bases.to(x.dtype)
        for _ in range(self.iterations):
            z = self._assign(x, bases)
            bases = F.normalize(x.T @ z, dim=0)
        return bases

    def _reconstruct(self, x: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
        return F.normalize(x + self.beta * self._assign(x, bases) @ bases.T, dim=-1)

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, D) and (A, D) normalised embeddings -> the same, reconstructed and renormalised."""
        if not self.training:
            return self.transform(video), self.transform(text)
        joint = torch.cat([video, text]).float()
        bases = self._expectation_maximisation(joint.detach())
        with torch.no_grad():
            self.bases.copy_(F.normalize(self.momentum * self.bases + (1 - self.momentum) * bases, dim=0))
        out = self._reconstruct(joint, bases)
        return out[: len(video)], out[len(video) :]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The test-time transform of each embedding on its own (running bases, one E-step)."""
        return self._reconstruct(x.float(), self.bases)
