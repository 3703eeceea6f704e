"""``python -m pipeline build --windows LEN:STRIDE``: long videos cut into overlapping windows, for search.

Every video the annotations give without a start/end becomes windows of LEN seconds every STRIDE
seconds: ``[0, LEN), [STRIDE, STRIDE + LEN), ...``, the last one running to the end of the video. Each
window is an ordinary segment sample (pipeline/extract.py seeks to its start and samples inside it
with the build's rules: 1 fps marks, at most ``--max-frames``, ``linspace`` when longer), with its
own key (``VIDEO_START-END``), the source timestamps of its frames, and ``segment`` in its JSON. A
video no longer than LEN is one sample, as without ``--windows``. Annotated segments (start/end in
the annotations) stay as they are.

Planning needs each video's duration: it is read from ffmpeg's banner (``ffmpeg -i``, no decoding),
several videos at a time, and kept in the build folder (``windows.json``) so that a rerun, a resumed
build and every task of a cluster build plan the same windows without asking ffmpeg again. A video
whose duration cannot be read is planned whole (one sample): its decode then reports what is wrong.

Without ``--annotations``, every video file under ``--videos`` (in path order) is a video to cut, with
no caption: a collection to search need not be annotated (windows and uncaptioned videos are
decoded; a build for training still needs captions).
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pipeline.ffmpeg_binary import ffmpeg_executable
from pipeline.ffmpeg_log import parse_source_info
from pipeline.records import VIDEO_EXTENSIONS, VideoRecord
from pipeline.remote_videos import ffmpeg_input
from pipeline.video_index import VideoIndex
from shards.storage import Store

DURATIONS_NAME = "windows.json"
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Windows:
    length_s: float
    stride_s: float

    @classmethod
    def parse(cls, text: str) -> Windows:
        """``"10:5"`` -> 10 s windows every 5 s (ValueError naming the problem)."""
        parts = text.split(":")
        try:
            length, stride = (float(p) for p in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            length = stride = None
        if length is None or stride is None:
            raise ValueError(f"--windows takes LEN:STRIDE in seconds (e.g. 10:5), not {text!r}")
        if not (length > 0 and stride > 0) or stride > length:
            raise ValueError(f"--windows {text}: LEN and STRIDE must be positive and STRIDE at most LEN (or seconds would be left out)")
        return cls(length, stride)

    def spans(self, duration_s: float | None) -> list[tuple[float, float | None]]:
        """The windows of a video this long, as (start, end) with end None for the one that runs to the
        end; [] when the video is no longer than one window (or its length is unknown): one whole sample."""
        if duration_s is None or duration_s <= self.length_s:
            return []
        spans, index = [], 0
        while True:
            start = round(index * self.stride_s, 6)
            if start + self.length_s >= duration_s:
                spans.append((start, None))
                return spans
            spans.append((start, round(start + self.length_s, 6)))
            index += 1

    def to_json(self) -> dict:
        return {"length_s": self.length_s, "stride_s": self.stride_s}


def probe_duration(location: str) -> float | None:
    """The video's duration from ffmpeg's banner (the container's; None when ffmpeg cannot tell)."""
    try:
        with ffmpeg_input(location) as source:
            run = subprocess.run([ffmpeg_executable(), "-nostdin", "-i", source], capture_output=True, text=True, errors="replace",
                                 timeout=PROBE_TIMEOUT_S)  # fmt: skip
    except Exception:  # noqa: BLE001 - unreadable here is reported by the decode, with its reason
        return None
    return parse_source_info(run.stderr).duration_s


def known_durations(store: Store, locations: list[str], workers: int, write: bool = True) -> dict[str, float | None]:
    """Each location's duration: from the build's ``windows.json`` where a run already read it, else
    from ffmpeg (``workers`` at a time), then written back for the next run (not by a dry run)."""
    known: dict[str, float | None] = json.loads(store.read_bytes(DURATIONS_NAME))["durations"] if store.exists(DURATIONS_NAME) else {}
    missing = [location for location in dict.fromkeys(locations) if location not in known]
    if missing:
        with ThreadPoolExecutor(max(1, workers)) as pool:  # each probe is an ffmpeg process: threads only wait
            known.update(zip(missing, pool.map(probe_duration, missing), strict=True))
    if missing and write:
        store.ensure_root()
        store.write_bytes(DURATIONS_NAME, json.dumps({"durations": known}, indent=0, sort_keys=True).encode())
    return known


def window_records(records: list[VideoRecord], windows: Windows, durations: dict[str, float | None]) -> list[VideoRecord]:
    """Each resolved video without a segment replaced by its windows (in time order); the rest as they are.
    Every record of a windowed build carries ``window`` in its JSON (decoded even without a caption)."""
    cut: list[VideoRecord] = []
    for record in records:
        if record.path is None or record.span is not None:
            cut.append(record)
            continue
        spans = windows.spans(durations.get(record.path))
        if not spans:
            record.extra = {**record.extra, "window": {**windows.to_json(), "index": 0, "of": 1}}
            cut.append(record)
            continue
        for index, (start, end) in enumerate(spans):
            name = f"{record.video_id}_{start:g}-{'end' if end is None else f'{end:g}'}"
            extra = {**record.extra, "window": {**windows.to_json(), "index": index, "of": len(spans)}, "source_video": record.video_id}
            cut.append(VideoRecord(name, record.reference, list(record.captions), record.split, record.path, start_s=start, end_s=end,
                                   extra=extra))  # fmt: skip
    return cut


def folder_records(videos_root: str) -> list[VideoRecord]:
    """Every video file under ``videos_root`` (path order), uncaptioned: the collection without annotations."""
    index = VideoIndex(videos_root)
    relative = sorted(path for path in index.relative_paths() if path.lower().endswith(VIDEO_EXTENSIONS))
    if not relative:
        raise ValueError(f"{videos_root}: no video files (extensions {', '.join(VIDEO_EXTENSIONS[:6])}, ...)")
    return [VideoRecord(path.rsplit(".", 1)[0], path, []) for path in relative]
