"""BertAdam, the optimiser CLIP4Clip, DRL, EMCL-Net and EERCF train with (and DGL's ``--optim
BertAdam``), rebuilt from CLIP4Clip's ``modules/optimization.py`` so their runs can be reproduced.

It is not AdamW, in three ways that change every step:
- no bias correction: the update is ``m / (sqrt(v) + eps)`` with the raw moving averages;
- the learning-rate schedule lives inside the optimiser: ``lr * warmup_cosine(step / t_total)``,
  where ``step`` counts this parameter's earlier updates, so the first update has lr 0, and the
  cosine runs over the whole progress (``cos(pi * x)``), not over the part after the warmup;
- each parameter's gradient is clipped to ``max_grad_norm`` on its own (``clip_grad_norm_(p)``),
  on top of the training loop's clip of the global norm.
Weight decay is added to the update before the learning rate multiplies it.

The arithmetic on fp32 parameters is done with ``torch._foreach_*`` over the parameters that share
a step count (normally all of them): the same operations as the reference's per-parameter loop,
issued as a few list operations instead of one set of operations per parameter (its speed is not
measured: bench/bench_gpu_suite.py has the row, no GPU has run it). fp16 parameters (``--precision
fp16``, CLIP's weights as the references train them) are updated one by one with the reference's
own calls, whose fp16 rounding the list operations do not reproduce.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch


def bert_warmup_cosine(progress: float, warmup: float) -> float:
    """CLIP4Clip's ``warmup_cosine(x, warmup)``: linear up to ``warmup``, then ``0.5 (1 + cos(pi x))``
    of the whole progress x (so it jumps from 1 to cos-value at the end of the warmup, as there)."""
    if progress < warmup:
        return progress / warmup
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class BertAdam(torch.optim.Optimizer):
    """``t_total``: the run's optimisation steps (the schedule's 100%); ``warmup``: its warmup fraction."""

    def __init__(self, params, lr: float, t_total: float, warmup: float = 0.1, b1: float = 0.9, b2: float = 0.98, e: float = 1e-6,
                 weight_decay: float = 0.2, max_grad_norm: float = 1.0) -> None:  # fmt: skip
        if t_total <= 0:
            raise ValueError(f"BertAdam needs the run's total steps (t_total > 0), got {t_total}")
        defaults = {"lr": lr, "t_total": t_total, "warmup": warmup, "b1": b1, "b2": b2, "e": e, "weight_decay": weight_decay,
                    "max_grad_norm": max_grad_norm}  # fmt: skip
        super().__init__(params, defaults)

    @staticmethod
    def scheduled_lr(group: dict, step: int) -> float:
        return group["lr"] * bert_warmup_cosine(step / group["t_total"], group["warmup"])

    def current_lrs(self) -> list[float]:
        """Each group's learning rate for its next update (what the reference's ``get_lr`` reports)."""
        rates = []
        for group in self.param_groups:
            steps = [self.state[p]["step"] for p in group["params"] if self.state.get(p)]
            rates.append(self.scheduled_lr(group, steps[0] if steps else 0))
        return rates

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim.Optimizer's signature
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            by_step: dict[int, list[torch.Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                by_step[state["step"]].append(p)
            for step, params in by_step.items():
                self._update(group, step, params)
                for p in params:
                    self.state[p]["step"] += 1
        return loss

    def _update(self, group: dict, step: int, params: list[torch.Tensor]) -> None:
        full = [p for p in params if p.dtype == torch.float32]
        if full:
            self._update_together(group, step, full)
        for p in params:  # fp16 weights (--precision fp16): the reference's own operations, one tensor at a time
            if p.dtype != torch.float32:
                self._update_one(group, step, p)

    def _update_together(self, group: dict, step: int, params: list[torch.Tensor]) -> None:
        """fp32 parameters: the reference's operations issued as list (``_foreach``) operations."""
        grads = [p.grad for p in params]
        if group["max_grad_norm"] > 0:  # clip_grad_norm_(p, max_norm) for each parameter alone
            torch._foreach_mul_(grads, _clip_coefficients(grads, group["max_grad_norm"]))
        moments = [self.state[p]["next_m"] for p in params]
        squares = [self.state[p]["next_v"] for p in params]
        torch._foreach_mul_(moments, group["b1"])
        torch._foreach_add_(moments, grads, alpha=1 - group["b1"])
        torch._foreach_mul_(squares, group["b2"])
        torch._foreach_addcmul_(squares, grads, grads, value=1 - group["b2"])
        denominators = torch._foreach_sqrt(squares)
        torch._foreach_add_(denominators, group["e"])
        updates = torch._foreach_div(moments, denominators)
        # each product rounded before it is added, as the reference writes it (update += wd * p; p.add_(-(lr * update)))
        if group["weight_decay"] > 0.0:
            torch._foreach_add_(updates, torch._foreach_mul(params, group["weight_decay"]))
        torch._foreach_mul_(updates, self.scheduled_lr(group, step))
        torch._foreach_sub_(params, updates)

    def _update_one(self, group: dict, step: int, p: torch.Tensor) -> None:
        """One fp16 parameter exactly as the reference updates it: in fp16 the list operations round
        differently (``_foreach_mul_(x, 0.9)`` and ``x.mul_(0.9)`` differ in the last bit on CPU), so the
        per-tensor calls are kept."""
        grad = p.grad
        if group["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
        next_m, next_v = self.state[p]["next_m"], self.state[p]["next_v"]
        next_m.mul_(group["b1"]).add_(grad, alpha=1 - group["b1"])
        next_v.mul_(group["b2"]).addcmul_(grad, grad, value=1 - group["b2"])
        update = next_m / (next_v.sqrt() + group["e"])
        if group["weight_decay"] > 0.0:
            update += group["weight_decay"] * p
        p.add_(-(self.scheduled_lr(group, step) * update))


def _clip_coefficients(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """Each gradient's ``clip_grad_norm_(g, max_norm)`` factor, min(1, max_norm / (|g| + 1e-6)), from one
    stacked tensor: two kernels instead of two per parameter."""
    norms = torch.stack([norm.float() for norm in torch._foreach_norm(grads)])
    return list((max_norm / (norms + 1e-6)).clamp(max=1.0).unbind())
