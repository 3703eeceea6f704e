"""The metrics as a person reads them: R@1/5/10, MdR and MnR both ways, with chance beside them.

``python -m eval`` and the demo print this same table; ``python -m eval --json`` prints the machine
form instead. Chance is what a random ranking scores over the split's videos: R@k = 100 k / N and
a mean (and median) rank of (N + 1) / 2.
"""

from __future__ import annotations

COLUMNS = ("R1", "R5", "R10", "MdR", "MnR")
HEADERS = ("R@1", "R@5", "R@10", "MdR", "MnR")
POST_NAMES = {"dual_softmax": "dual softmax", "inverted_softmax": "inverted softmax"}


def chance_row(num_videos: int) -> dict:
    return {"R1": min(100.0, 100.0 / num_videos), "R5": min(100.0, 500.0 / num_videos), "R10": min(100.0, 1000.0 / num_videos),
            "MdR": (num_videos + 1) / 2, "MnR": (num_videos + 1) / 2}  # fmt: skip


def _row(label: str, values: dict, count: str = "") -> str:
    return f"{label:<24}" + "".join(f"{values[c]:>8.1f}" for c in COLUMNS) + f"{count:>8}"


def metrics_table(metrics: dict) -> str:
    """Text lines for a ``metrics.json`` document (raw scores, any post-processing, coarse-to-fine, chance)."""
    lines = [f"{'':<24}" + "".join(f"{h:>8}" for h in HEADERS) + f"{'N':>8}"]
    for direction in ("t2v", "v2t"):
        lines.append(_row(direction, metrics["raw"][direction], str(metrics["raw"][direction]["N"])))
    for name, shown in POST_NAMES.items():
        if name in metrics:
            for direction in ("t2v", "v2t"):
                lines.append(_row(f"{direction} ({shown})", metrics[name][direction], str(metrics[name][direction]["N"])))
    bank = metrics.get("qb_norm_bank")
    for name, shown in POST_NAMES.items():
        if bank and name in bank:
            for direction in ("t2v", "v2t"):
                lines.append(_row(f"{direction} ({shown.split()[0]}, bank)", bank[name][direction], str(bank[name][direction]["N"])))
    stages = metrics.get("coarse_to_fine")
    if stages:
        lines.append(_row(f"t2v (two-stage, top {stages['topk']})", stages["two_stage"]["t2v"], str(stages["two_stage"]["t2v"]["N"])))
        lines.append(_row("t2v (coarse only)", stages["coarse_only"]["t2v"], str(stages["coarse_only"]["t2v"]["N"])))
    lines.append(_row(f"chance ({metrics['num_videos']} videos)", chance_row(metrics["num_videos"])))
    return "\n".join(lines)
