"""Choosing the kept frames while they stream, in memory that does not grow with duration.

``select_frames`` needs the number of candidates, which is known only when ffmpeg ends.
Holding every candidate until then costs 1-2 GB per worker on a 2-hour clip. Instead:

- head: the first ``max_frames`` candidates; tail: a ring of the last ``max_frames``;
- uniform (linspace): the duration in the banner predicts the count to within a frame or
  two, so the frames that linspace would keep for *any* count in a small window around the
  prediction are held (at most ``max_frames`` x window of them). When the real count falls
  in the window the result is identical to choosing at the end; when it does not (a lying
  header, an unknown duration) the caller decodes once more with the count now known.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from pipeline.sampling import SlicePosition, select_frames

# counts the prediction may be off by: the container duration includes audio (longer, rarely
# shorter) and the last frame's own duration
WINDOW_BELOW = 4
WINDOW_ABOVE = 2


def predicted_candidates(duration_s: float | None, sample_fps: float, max_seconds: float | None) -> int | None:
    """How many sampling marks fall inside the decoded span, from the header's duration."""
    if duration_s is None or duration_s <= 0:
        return None
    span = min(duration_s, max_seconds) if max_seconds else duration_s
    return max(1, math.ceil(span * sample_fps - 1e-9))


class StreamingFrameChooser:
    """Offered every candidate in order; keeps the ones the final choice can need."""

    def __init__(self, max_frames: int, slice_position: SlicePosition, count_window: range | None) -> None:
        self.max_frames = max_frames
        self.slice_position = slice_position
        self.count_window = count_window
        self.offered = 0
        self._held: dict[int, np.ndarray] = {}
        self._ring: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=max_frames)
        self._wanted: set[int] = set()
        if slice_position is SlicePosition.UNIFORM and count_window is not None:
            for count in count_window:
                self._wanted.update(select_frames(count, max_frames, slice_position))

    @classmethod
    def for_prediction(cls, max_frames: int, slice_position: SlicePosition, predicted: int | None) -> StreamingFrameChooser:
        window = None if predicted is None else range(max(1, predicted - WINDOW_BELOW), predicted + WINDOW_ABOVE + 1)
        return cls(max_frames, slice_position, window)

    @classmethod
    def for_count_up_to(cls, max_frames: int, slice_position: SlicePosition, bound: int) -> StreamingFrameChooser:
        """Every count from 1 to ``bound`` served from one pass (a file with no duration in its header, decoded
        once with a bound on its length): holds up to ``bound`` frames, so only for a small bound."""
        return cls(max_frames, slice_position, range(1, bound + 1))

    @classmethod
    def for_known_count(cls, max_frames: int, slice_position: SlicePosition, count: int) -> StreamingFrameChooser:
        return cls(max_frames, slice_position, range(count, count + 1))

    def offer(self, frame: np.ndarray) -> None:
        index = self.offered
        self.offered += 1
        if self.slice_position is SlicePosition.TAIL:
            self._ring.append((index, frame))
        elif self.slice_position is SlicePosition.HEAD:
            if index < self.max_frames:
                self._held[index] = frame
        elif index < self.max_frames or index in self._wanted:
            # the first max_frames are all kept when the clip turns out to be short
            self._held[index] = frame

    def chosen(self) -> list[tuple[int, np.ndarray]] | None:
        """The (candidate index, frame) pairs ``select_frames`` keeps, or None when the frames
        it needs were not held (the count fell outside the window): decode again."""
        keep = select_frames(self.offered, self.max_frames, self.slice_position) if self.offered else []
        if self.slice_position is SlicePosition.TAIL:
            ring = dict(self._ring)
            return [(i, ring[i]) for i in keep]
        if any(i not in self._held for i in keep):
            return None
        return [(i, self._held[i]) for i in keep]
