"""A NaN or infinite loss noticed on the device, read by the host only every few steps.

Reading ``loss.item()`` after every step makes the host wait for the GPU each step (a sync that
keeps the next batch from being queued while this one runs). ``NonFiniteWatch.note`` only records,
on the device, the first step whose loss was not finite and its value; ``check`` reads that once
and raises naming the step and its batch's keys (kept on the host for the steps since the last
check). The loop checks every ``--sync-every-steps`` steps and always before anything uses the
model's state: a checkpoint, an evaluation, a logged loss. So a NaN can never be saved or
evaluated, only trained on for at most that many steps, which the run then stops on anyway.
"""

from __future__ import annotations

from collections import deque

import torch


class NonFiniteWatch:
    def __init__(self, device: torch.device, window: int) -> None:
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_value = torch.zeros((), dtype=torch.float32, device=device)
        self.recent_keys: deque[tuple[int, list[str]]] = deque(maxlen=max(1, window))

    def note(self, loss: torch.Tensor, step: int, keys: list[str]) -> None:
        """Record this step's loss without reading it (no host sync)."""
        first = ~torch.isfinite(loss.detach()) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(first, step, self.first_bad_step)
        self.bad_value = torch.where(first, loss.detach().float(), self.bad_value)
        self.recent_keys.append((step, list(keys[:8])))

    def check(self) -> None:
        """One host read: raise if any loss since the start was not finite."""
        step = int(self.first_bad_step.item())
        if step < 0:
            return
        keys = next((k for s, k in self.recent_keys if s == step), None)
        where = f"last batch keys {keys}" if keys is not None else "its batch's keys are no longer known"
        raise FloatingPointError(f"loss became {self.bad_value.item()} at step {step}; {where}")
