"""CLIP4Clip's optimiser recipe: two learning rates, decoupled weight decay, warmup + cosine."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from model.config import option
from model.peft import is_trainable_backbone_name


@dataclass(kw_only=True)
class OptimOptions:
    """The optimiser's flags (``TrainConfig`` extends this class); defaults are CLIP4Clip's."""

    lr: float = option(1e-4, "learning rate of the modules outside CLIP (head, similarity)")
    coef_lr: float = option(1e-3, "CLIP's learning rate is lr x coef_lr (CLIP4Clip's 1e-7)")
    weight_decay: float = option(0.2)
    warmup_fraction: float = option(0.1, "linear warmup over this fraction of the steps, then cosine")
    grad_clip: float = option(1.0, "gradient norm clip (0: off)")

NO_DECAY_HINTS = ("bias", "ln_", "norm", "LayerNorm", "positional_embedding", "class_embedding", "logit_scale", "token_embedding")


def parameter_groups(model: nn.Module, lr: float, coef_lr: float, weight_decay: float) -> list[dict]:
    """New modules at ``lr``; CLIP weights at ``lr * coef_lr``. Biases, norms, embeddings and
    the temperature get no weight decay (they are not weights that decay should shrink)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_clip = name.startswith("clip.") and not is_trainable_backbone_name(name)  # PEFT modules train at lr
        decays = parameter.ndim >= 2 and not any(hint in name for hint in NO_DECAY_HINTS)
        groups.setdefault((is_clip, decays), []).append(parameter)
    return [
        {
            "params": params,
            "lr": lr * coef_lr if is_clip else lr,
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{'clip' if is_clip else 'new'}{'' if decays else '_no_decay'}",
        }
        for (is_clip, decays), params in sorted(groups.items())
    ]


def build_optimizer(model: nn.Module, lr: float, coef_lr: float, weight_decay: float, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW over the two learning-rate groups; ``fused`` (on CUDA) updates every parameter in one kernel
    instead of a loop of small ones: the same update, one launch."""
    return torch.optim.AdamW(parameter_groups(model, lr, coef_lr, weight_decay), betas=(0.9, 0.98), eps=1e-6, fused=fused)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> callable:
    """Multiplier for LambdaLR: linear warmup over the first fraction, cosine to 0 after."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
