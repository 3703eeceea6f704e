"""How a training step computes (``--precision``), each mode as the run it reproduces computed it.

| mode | weights | forward | backward and step | whose |
|---|---|---|---|---|
| ``fp32`` | fp32 | fp32 | plain | TempMe, the dual seed; the default on CPU |
| ``bf16`` | fp32 | bf16 autocast | plain | this project's default on GPU (``auto``) |
| ``fp16`` | CLIP fp16 (``convert_weights``), heads fp32 | fp16 in CLIP, LayerNorm in fp32 | plain; BertAdam keeps fp16 moments | CLIP4Clip, DRL, EMCL-Net, EERCF |
| ``amp-fp16`` | fp32 | fp16 autocast | loss scaled by a GradScaler, unscaled before the clip | DGL's ``--precision amp`` |

``fp16`` is a property of the weights, so checkpoints keep it (a resumed fp16 run stays fp16, and
a run of another precision refuses such a checkpoint); ``amp-fp16``'s scaler state is saved with the
optimiser's. All four run on CPU too (slowly), so CI tests them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from model.half_precision import convert_weights
from train.options import PRECISIONS


def resolved_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


class TrainingPrecision:
    def __init__(self, precision: str, device: torch.device) -> None:
        self.mode, self.device = resolved_precision(precision, device), device
        self.scaler = torch.amp.GradScaler(device.type) if self.mode == "amp-fp16" else None

    def prepare(self, model: nn.Module) -> None:
        """Before the optimiser is built: ``fp16`` converts CLIP's weights (its moments follow them)."""
        if self.mode == "fp16":
            convert_weights(model.clip)

    def autocast(self) -> AbstractContextManager:
        if self.mode == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.mode == "amp-fp16":
            return torch.autocast(self.device.type, dtype=torch.float16)
        return nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """True gradients before the global clip (DGL: ``scaler.unscale_`` then ``clip_grad_norm_``)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def optimizer_step(self) -> Callable[[torch.optim.Optimizer], None]:
        """How the optimiser steps: through the scaler (skipped on inf/NaN gradients, scale updated) or directly."""
        if self.scaler is None:
            return lambda optimizer: optimizer.step()

        def scaled(optimizer: torch.optim.Optimizer) -> None:
            self.scaler.step(optimizer)
            self.scaler.update()

        return scaled

    def state_dict(self) -> dict:
        return {"mode": self.mode, "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
