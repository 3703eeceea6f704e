"""``--accum-freq K``: one optimiser step over K micro-batches whose gradient equals the whole batch's.

A contrastive loss is not a sum over samples: every caption is scored against every video of the
batch, so summing the gradients of K small batches (each with its own negatives) is a different
experiment. open_clip's scheme makes it exact: encode every micro-batch once without gradients and
keep its features; then, for each micro-batch in turn, encode it again with gradients and take the
loss of the *whole* batch with that micro-batch live and the others from the cache. Summed over the
K passes, each sample's features receive exactly the gradient the whole batch gives them. Three
things make the sum equal the whole batch's, not merely close:

- **The re-encoding reproduces the first one**: the RNG state before each micro-batch's first
  forward is replayed before its second.
- **What the loss itself holds counts once**: the similarity's parameters and CLIP's temperature
  meet the whole batch in every pass, so their gradient is summed K times; it is divided by K
  (open_clip leaves the temperature's gradient K-fold). The loss's own random draws (the cross
  encoder's dropout, CDCR's token choice) are replayed from one state in every pass, the state the
  whole batch's loss would start from, and running state the loss updates (EMCL-Net's bases) is
  restored before every pass after the first, so it moves once per step.
- **Across ranks** each pass gathers the ranks' features as a step without accumulation does; DDP
  synchronises the gradients on the last pass only (``no_sync`` before).

The encoders must be per-sample (nothing in this model mixes clips of a batch before the loss: CLIP,
the heads, TempMe's merging and DGL's prompts all work clip by clip), so a micro-batch's features do
not depend on the others. Every method qualifies.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from train.objective import retrieval_loss
from train.precision import TrainingPrecision


class StepParts(Protocol):
    """What of a ``train.step.Trainer`` an accumulated step uses (named here so this module need not import it)."""

    model: torch.nn.Module
    device: torch.device
    forward_module: torch.nn.Module
    precision: TrainingPrecision
    config: object

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...

    def autocast(self) -> AbstractContextManager: ...


def rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def loss_side_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Parameters the loss uses directly (not through a micro-batch's features): their gradient is whole in every pass."""
    return [p for p in [*model.similarity.parameters(), model.clip.logit_scale] if p.requires_grad]


def _assemble(cached: list[tuple], live: tuple, which: int) -> tuple:
    """The whole local batch's outputs: micro-batch ``which`` live, the others from the cache (None fields stay None)."""
    fields = []
    for index in range(len(live)):
        parts = [live[index] if j == which else cached[j][index] for j in range(len(cached))]
        fields.append(None if parts[0] is None else torch.cat(parts))
    return tuple(fields)


def accumulate_gradients(trainer: StepParts, tokens: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor, micro_batches: int,
                         gather_batch: Callable) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    """Fills the parameters' gradients as one backward of the whole (local) batch would; returns its loss and parts.
    ``gather_batch``: train/step.py's (the same gathering as a step without accumulation)."""
    if tokens.shape[0] % micro_batches:
        raise ValueError(f"a rank's batch of {tokens.shape[0]} does not split into {micro_batches} micro-batches")
    model, device = trainer.model, trainer.device
    pieces = list(zip(tokens.chunk(micro_batches), frames.chunk(micro_batches), mask.chunk(micro_batches), strict=True))
    starts, cached = [], []
    with torch.no_grad(), trainer.autocast():
        for piece in pieces:
            starts.append(rng_state(device))
            cached.append(trainer.forward_module(*piece))
    loss_start = rng_state(device)
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    trainer.optimizer.zero_grad(set_to_none=True)
    distributed = isinstance(trainer.forward_module, DistributedDataParallel)
    for which, piece in enumerate(pieces):
        if which:
            with torch.no_grad():
                for name, buffer in model.named_buffers():
                    buffer.copy_(buffers[name])
        last = which == micro_batches - 1
        with trainer.forward_module.no_sync() if distributed and not last else nullcontext():
            set_rng_state(starts[which], device)
            with trainer.autocast():
                outputs = _assemble(cached, trainer.forward_module(*piece), which)
                set_rng_state(loss_start, device)
                text, video = gather_batch(model, outputs, mask)
                loss, parts = retrieval_loss(model, text, video, trainer.config)
            trainer.precision.backward(loss)
    for parameter in loss_side_parameters(model):
        if parameter.grad is not None:
            parameter.grad.div_(micro_batches)
    return loss.detach(), parts
