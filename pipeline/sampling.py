"""Frame selection rules, kept identical to CLIP4Clip so shards are comparable with its numbers.

CLIP4Clip reads a 3 fps transcode and keeps one frame per second, the transcode's frame
at each second mark (``rawvideo_util.py`` at feature_framerate 1); when more than ``max_frames`` remain it keeps
the head, the tail, or ``np.linspace(0, n - 1, max_frames)`` cast to int (``slice_framepos``
0, 1, 2). Selection has no randomness, so it is done once at build time instead of in every
training epoch.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class SlicePosition(StrEnum):
    """CLIP4Clip's ``slice_framepos``: which frames survive when a clip is too long."""

    HEAD = "head"
    TAIL = "tail"
    UNIFORM = "uniform"


def sampling_stride(transcode_fps: float, sample_fps: float) -> int:
    """How many transcoded frames separate two sampled ones (3 fps -> 1 fps gives 3).

    With stride 3 the sampled frames are 0, 3, 6, ...: the transcode's frame at each second
    mark, as CLIP4Clip's reader seeks to ``sec * fps`` (``pipeline/extract.py`` makes that the
    source frame on screen at the mark). A non-integer ratio has no such "first frame
    of each interval", so it is refused instead of being silently rounded.
    """
    if sample_fps <= 0 or transcode_fps <= 0:
        raise ValueError("frame rates must be positive")
    ratio = transcode_fps / sample_fps
    stride = round(ratio)
    if stride < 1 or abs(ratio - stride) > 1e-9:
        raise ValueError(f"transcode fps {transcode_fps} must be a whole multiple of sample fps {sample_fps}")
    return stride


def select_frames(num_candidates: int, max_frames: int, slice_position: SlicePosition) -> list[int]:
    """Indices (into the sampled candidates) kept for a clip of ``num_candidates`` frames."""
    if max_frames <= 0:
        raise ValueError("max_frames must be positive")
    if num_candidates <= max_frames:
        return list(range(num_candidates))
    if slice_position is SlicePosition.HEAD:
        return list(range(max_frames))
    if slice_position is SlicePosition.TAIL:
        return list(range(num_candidates - max_frames, num_candidates))
    return np.linspace(0, num_candidates - 1, num=max_frames, dtype=int).tolist()
