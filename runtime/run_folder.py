"""The run folder's layout: the one place that names what a training run leaves behind, and reads it.

    OUTPUT/
      metrics.jsonl          one JSON object per event: config, train steps, evaluations, best (train/run_log.py)
      curves.png             loss and R@1 against step, drawn at the end
      tensorboard/           with --tensorboard
      checkpoints/
        step_NNNNNNNN.pt     the last two checkpoints (model, optimiser, schedule, RNG, data position)
        latest               the name of the newest complete one
        best.pt, best.json   with --keep-best: the best validation checkpoint and its metric, value, step, epoch

The trainer writes it (train/checkpointer.py and train/run_log.py); the evaluator, the search
index and the results card read it (model/trained_model.py, eval/card.py). Reading needs no torch,
so the card and every command's ``--help`` start at once; the checkpoints' contents are
model/checkpoint.py's.
"""

from __future__ import annotations

import json
import re

from shards.storage import Store

CHECKPOINTS = "checkpoints"
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
TENSORBOARD = "tensorboard"
LATEST = "latest"
BEST = "best.pt"  # --keep-best: the best validation checkpoint, beside the latest
BEST_RECORD = "best.json"  # which metric, its value, the step and epoch it came from
CHECKPOINT_PATTERN = re.compile(r"^step_(\d{8})\.pt$")


def checkpoints_of(run: str) -> str:
    """The checkpoints folder of a run folder (or URL)."""
    return f"{run.rstrip('/')}/{CHECKPOINTS}"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def stale_checkpoints(names: list[str], newest: str, keep: int) -> list[str]:
    """Checkpoint names beyond the ``keep`` newest (``newest`` included), oldest first: what to remove."""
    older = sorted(n for n in names if CHECKPOINT_PATTERN.match(n) and n != newest)
    return older[: max(0, len(older) - (keep - 1))]


def better(metric: str, value: float, than: float | None) -> bool:
    """Recalls (R1, R5, R10) are maximised, ranks (MdR, MnR) minimised."""
    if than is None:
        return True
    return value < than if metric.split("/")[-1] in ("MdR", "MnR") else value > than


def best_record(directory: str) -> dict | None:
    """``best.json`` of a checkpoints folder, None when the run kept no best."""
    store = Store(directory)
    return json.loads(store.read_bytes(BEST_RECORD)) if store.exists(BEST_RECORD) else None


def best_checkpoint(directory: str) -> tuple[str, dict] | None:
    """``best.pt`` and its record, None when the run kept none."""
    record = best_record(directory)
    if record is None:
        return None
    store = Store(directory)
    if not store.exists(BEST):
        raise RuntimeError(f"{store.url_of(BEST_RECORD)}: names {BEST}, which does not exist")
    return store.url_of(BEST), record


def latest_checkpoint(directory: str) -> str | None:
    """The checkpoint ``latest`` names (a path or URL), None when there is none yet."""
    store = Store(directory)
    if not store.exists(LATEST):
        return None
    name = store.read_bytes(LATEST).decode("utf-8", "replace").strip()
    pointer = store.url_of(LATEST)
    if not CHECKPOINT_PATTERN.match(name):
        raise RuntimeError(f"{pointer}: does not name a checkpoint ({name!r})")
    if not store.exists(name):
        raise RuntimeError(f"{pointer}: names {name}, which does not exist")
    return store.url_of(name)


def last_per_step(records: list[dict]) -> list[dict]:
    """One record per step, the latest: a resumed run redoes the steps after its checkpoint, and
    drawing both would zig-zag backwards."""
    by_step = {r["step"]: r for r in records}
    return [by_step[step] for step in sorted(by_step)]
