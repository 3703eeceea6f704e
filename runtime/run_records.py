"""The run log's file and how to read it, shared by the trainer that writes it (train/run_log.py) and the results
card that reads it (eval/card.py), which may not import the trainer."""

from __future__ import annotations

METRICS_NAME = "metrics.jsonl"


def last_per_step(records: list[dict]) -> list[dict]:
    """One record per step, the latest: a resumed run redoes the steps after its checkpoint, and
    drawing both would zig-zag backwards."""
    by_step = {r["step"]: r for r in records}
    return [by_step[step] for step in sorted(by_step)]
