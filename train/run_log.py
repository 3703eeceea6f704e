"""What a run leaves behind for people: a JSONL of metrics and, at the end, a PNG of curves."""

from __future__ import annotations

import json
import os
import time


class RunLog:
    """Rank 0 appends one JSON object per event to ``metrics.jsonl`` (resumed runs append)."""

    def __init__(self, directory: str, enabled: bool) -> None:
        self.enabled = enabled
        self.path = os.path.join(directory, "metrics.jsonl")
        if enabled:
            os.makedirs(directory, exist_ok=True)

    def write(self, kind: str, **values) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"kind": kind, "time": time.time(), **values}, default=float) + "\n")

    def read(self) -> list[dict]:
        if not os.path.isfile(self.path):
            return []
        with open(self.path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]


def plot_curves(records: list[dict], path: str) -> None:
    """Loss against step and, when evaluations ran, t2v/v2t R@1 against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    figure, axes = plt.subplots(1, 2 if evals else 1, figsize=(11 if evals else 6, 4), squeeze=False)
    axes[0][0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    axes[0][0].set(xlabel="step", ylabel="loss", title="training loss")
    if evals:
        for direction in ("t2v", "v2t"):
            axes[0][1].plot([r["step"] for r in evals], [r[direction]["R1"] for r in evals], marker="o", label=f"{direction} R@1")
        axes[0][1].set(xlabel="step", ylabel="R@1 (%)", title="evaluation")
        axes[0][1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
