"""Results grouped by source video: one hit per video, its best moment first, the next best collapsed under it.

An index of a ``--windows`` build (or of annotated segments) holds many rows per source video; a
list of ten windows of one video would hide every other video. Rows that are a segment group by the
file they were cut from (``source_file``); every other row is its own group. The ranking inside the
candidates is untouched (exact or approximate first stage, the fine stage's rescoring): grouping keeps
each video's best row, in that order, and lists the video's other candidate rows as its ``moments``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_MOMENTS = 5  # other windows of a video shown under its best one
CANDIDATES_PER_RESULT = 10  # first-stage depth per wanted result when the index holds segments (more if too few videos)


@dataclass
class Hit:
    row: int
    score: float
    stage: str  # "fine": rescored by the model's similarity; "coarse": first-stage score only
    record: dict  # key, shard, captions, ... (search/indexer.py ``_row_record``)
    moments: list[Hit] = field(default_factory=list)  # other windows of the same video, best first (grouped results)


def group_key(record: dict) -> str:
    """The source video a row belongs to: its file for a segment, else the row's own key."""
    if "segment" in record and record.get("source_file"):
        return f"file:{record['source_file']}"
    return f"key:{record['key']}"


def group_hits(hits: list[Hit], k: int, exclude_group: str | None = None) -> list[Hit]:
    """At most ``k`` hits, one per source video (its best), each with its next best rows as moments."""
    grouped: dict[str, Hit] = {}
    for hit in hits:
        key = group_key(hit.record)
        if key == exclude_group:
            continue
        if key not in grouped:
            if len(grouped) == k:
                continue  # later rows may still be moments of a video already listed
            grouped[key] = hit
        elif len(grouped[key].moments) < MAX_MOMENTS:
            grouped[key].moments.append(hit)
    return list(grouped.values())


def time_range(record: dict) -> tuple[float, float | None] | None:
    """(start, end) seconds in the source video of a segment row (end None: to its end); None for a whole clip."""
    segment = record.get("segment")
    if not segment:
        return None
    end = segment.get("end_s")
    if end is None and record.get("duration_s") is not None:
        end = record["duration_s"]
    return float(segment.get("start_s") or 0.0), None if end is None else float(end)


def moment_text(record: dict) -> str:
    """``95-105 s of long.mp4`` for a moment of a longer video; empty for a whole clip (the CLI and the page)."""
    span = time_range(record)
    if span is None:
        return ""
    end = "end" if span[1] is None else f"{span[1]:g}"
    return f"{span[0]:g}-{end} s of {record.get('source_file') or record.get('video_id')}"
