"""A validation split of one's own data: a deterministic, video-disjoint share of the annotated videos held out.

``pipeline build --val-fraction F`` builds ``OUT/train`` and ``OUT/val``. A video is held out when the
SHA-256 of its reference (what the annotation names: the video's file or id, the same for every segment
or caption of one video) falls in the lowest F of the hash range: the split does not depend on the
order of the annotations, on which other videos are listed, or on the machine, so a rebuild, a cluster
job and a later, longer list all put a video on the same side; and no video is on both sides. Each
part's manifest records the rule (``holdout``).
"""

from __future__ import annotations

import hashlib

from pipeline.records import VideoRecord

RULE = "sha256(reference) as a fraction of 2**64 (its first 8 bytes) < fraction: held out"
PARTS = ("train", "val")


def is_held_out(reference: str, fraction: float) -> bool:
    digest = hashlib.sha256(reference.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_records(records: list[VideoRecord], fraction: float) -> dict[str, list[VideoRecord]]:
    """{"train": ..., "val": ...}, annotation order kept; ValueError when either side would be empty."""
    if not 0 < fraction < 1:
        raise ValueError(f"--val-fraction must be between 0 and 1, not {fraction:g}")
    parts: dict[str, list[VideoRecord]] = {part: [] for part in PARTS}
    for record in records:
        parts["val" if is_held_out(record.reference, fraction) else "train"].append(record)
    videos = {part: len({record.reference for record in chosen}) for part, chosen in parts.items()}
    empty = [part for part in PARTS if not parts[part]]
    if empty:
        raise ValueError(f"--val-fraction {fraction:g} leaves the {empty[0]} part empty ({videos['train']} videos to train, "
                         f"{videos['val']} to validate): {'raise' if empty[0] == 'val' else 'lower'} it")  # fmt: skip
    return parts


def holdout_record(fraction: float, part: str, records: list[VideoRecord]) -> dict:
    """What a part's manifest says of the split it belongs to."""
    return {"fraction": fraction, "part": part, "rule": RULE, "videos": len({record.reference for record in records})}
