"""The bounds on decoding a query file (``python -m search.serve``'s ``--max-query-*`` flags).

Its own module, free of torch, because the service's argument parser reads the defaults and
``--help`` must answer at once; search/media_query.py and search/decode_gate.py apply them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.extract import SourceInfo


def default_concurrent_decodes() -> int:
    """Half the cores (at least one): decodes never take every core from the text queries."""
    return max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True)
class QueryDecodeLimits:
    """Every bound on decoding query files, each with the ``python -m search.serve`` flag that sets it."""

    concurrent: int = default_concurrent_decodes()  # --max-query-decodes
    queue: int = 4  # --query-decode-queue: requests that may wait for a decode (and upload meanwhile)
    max_seconds: float = 180.0  # --max-query-seconds: by the header; a file that declares no duration is decoded up to here
    max_pixels: int = 3840 * 2160  # --max-query-pixels: width x height of a frame (4K)
    max_frames: int = 180 * 60  # --max-query-frames: duration x frame rate, as the header declares them
    wall_s: float = 30.0  # --query-decode-timeout-s: one ffmpeg run
    memory_mb: int = 2048  # --query-decode-memory-mb: RLIMIT_AS of the ffmpeg child (it reserves hundreds of MB for any file)
    retry_after_s: int = 5  # Retry-After of a 503

    def __post_init__(self) -> None:
        if self.concurrent < 1 or self.queue < 0 or self.max_seconds <= 0 or self.max_pixels < 1 or self.max_frames < 1:
            raise ValueError("query decode limits: at least one concurrent decode, a queue of 0 or more, and positive bounds")
        if self.wall_s <= 0 or self.memory_mb < 256:
            raise ValueError("query decode limits: a positive wall time and at least 256 MB of memory for ffmpeg")

    def check_source(self, source: SourceInfo) -> str | None:
        """Why a file whose header says this costs too much to decode (one sentence), or None."""
        if source.duration_s is not None and source.duration_s > self.max_seconds:
            return f"the file lasts {_clock(source.duration_s)}; this service decodes query files of at most {self.max_seconds:g} s (--max-query-seconds)"
        if source.width and source.height and source.width * source.height > self.max_pixels:
            return (f"its frames are {source.width}x{source.height} ({source.width * source.height:,} pixels); this service decodes at most "
                    f"{self.max_pixels:,} pixels a frame (--max-query-pixels)")  # fmt: skip
        if source.duration_s is not None and source.fps and source.duration_s * source.fps > self.max_frames:
            frames = source.duration_s * source.fps
            return f"it declares {frames:,.0f} frames; this service decodes at most {self.max_frames:,} (--max-query-frames)"
        return None

    def to_json(self) -> dict:
        return asdict(self)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
