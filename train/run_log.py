"""What a run leaves behind for people: a JSONL of metrics and, at the end, a PNG of curves."""

from __future__ import annotations

import io
import json
import os
import time

from runtime.run_folder import METRICS_NAME, last_per_step
from shards.storage import Store


class RunLog:
    """Rank 0 appends one JSON object per event to ``metrics.jsonl`` (resumed runs append).

    ``directory`` may be any fsspec URL. Object stores have no append, so there the whole file
    (a few hundred bytes per logged step) is uploaded again on each write, atomically.
    """

    def __init__(self, directory: str, enabled: bool) -> None:
        self.enabled = enabled
        self.store = Store(directory)
        self._remote_text: str | None = None
        if enabled and self.store.is_local:
            os.makedirs(self.store.root, exist_ok=True)

    def write(self, kind: str, **values) -> None:
        if not self.enabled:
            return
        line = json.dumps({"kind": kind, "time": time.time(), **values}, default=float) + "\n"
        if self.store.is_local:
            with open(self.store.path(METRICS_NAME), "a", encoding="utf-8") as handle:
                handle.write(line)
            return
        if self._remote_text is None:
            self._remote_text = self._text()
        self._remote_text += line
        self.store.write_bytes(METRICS_NAME, self._remote_text.encode("utf-8"))

    def _text(self) -> str:
        return self.store.read_bytes(METRICS_NAME).decode("utf-8") if self.store.exists(METRICS_NAME) else ""

    def read(self) -> list[dict]:
        return [json.loads(line) for line in self._text().splitlines() if line.strip()]

    def save_figure(self, name: str, records: list[dict]) -> None:
        """``plot_curves`` of ``records`` as ``name`` next to the log."""
        self.store.write_bytes(name, plot_curves(records))


def plot_curves(records: list[dict]) -> bytes:
    """PNG of loss against step and, when evaluations ran, t2v/v2t R@1 against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = last_per_step([r for r in records if r["kind"] == "train"])
    evals = last_per_step([r for r in records if r["kind"] == "eval"])
    figure, axes = plt.subplots(1, 2 if evals else 1, figsize=(11 if evals else 6, 4), squeeze=False)
    axes[0][0].plot([r["step"] for r in train], [r["loss"] for r in train], lw=1)
    axes[0][0].set(xlabel="step", ylabel="loss", title="training loss")
    if evals:
        for direction in ("t2v", "v2t"):
            axes[0][1].plot([r["step"] for r in evals], [r[direction]["R1"] for r in evals], marker="o", label=f"{direction} R@1")
        axes[0][1].set(xlabel="step", ylabel="R@1 (%)", title="evaluation")
        axes[0][1].legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
