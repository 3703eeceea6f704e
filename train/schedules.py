"""Learning-rate schedules of the runs we reproduce, as multipliers of the base rate by step.

Each is written from its source; BertAdam's own schedule lives in train/bert_adam.py, since the
optimiser applies it per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def project_warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """This project's schedule for ``--optimizer adamw`` (a LambdaLR multiplier, stepped after each
    update): linear warmup reaching 1 at the end of the warmup, then cosine to 0 over the rest."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def tempme_cosine_with_warmup(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """TempMe's ``get_cosine_schedule_with_warmup`` (num_cycles 0.5, warmup ``int(fraction * total)``):
    0 at the first update, linear up, then half a cosine to 0; a LambdaLR stepped after each update."""
    warmup = int(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))

    return factor


def dgl_cosine_lr(base_lr: float, total_steps: float, warmup_fraction: float, step: int) -> float:
    """DGL's ``utils/lr_scheduler.py`` in 'cos' mode, set before the update of global step ``step``
    (0-based): a "slow start" from 1e-8 over ``warmup_fraction * total`` steps, then cosine, never
    below 1e-8. The caller multiplies by each group's ``lr_mult``."""
    slow_start, floor = warmup_fraction * total_steps, 1e-8
    if slow_start > 0 and step <= slow_start:
        rate = min(step / slow_start * (base_lr - floor) + floor, base_lr)
    else:
        rate = 0.5 * base_lr * (1.0 + math.cos((step - slow_start) / (total_steps - slow_start) * math.pi))
    return max(rate, floor)
