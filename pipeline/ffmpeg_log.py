"""What ffmpeg's log says about a video: the input banner, every decoded frame, and damage.

The bundled static ffmpeg has no ffprobe, so everything the builder knows about a source
comes from one run's stderr: the input banner (duration, codec, stored size, sample aspect,
rotation), one ``showinfo`` line per decoded frame (its exact timestamp, which the ``fps``
filter replaces by its output grid), and the demuxer/decoder's complaints.
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class SourceInfo:
    """What ffmpeg reported about the input; None where it could not tell.

    ``width``/``height`` are the stored (coded) size. ``display_width``/``display_height`` are
    what a player shows: the width stretched by the sample aspect ratio, then swapped when the
    container asks for a 90/270 degree rotation (phones store portrait clips as landscape).
    """

    duration_s: float | None
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None
    sample_aspect: tuple[int, int] = (1, 1)
    rotation_degrees: float = 0.0
    time_base: Fraction | None = None  # of the stream's timestamps (1 / tbn)

    @property
    def display_size(self) -> tuple[int, int] | None:
        if self.width is None or self.height is None:
            return None
        num, den = self.sample_aspect
        width = round(self.width * num / den) if num and den else self.width
        if round(abs(self.rotation_degrees)) % 180 == 90:
            return self.height, width
        return width, self.height


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #0:\d+.*?: Video: (\w+)")
_SIZE = re.compile(r",\s*(\d{1,5})x(\d{1,5})[\s,]")
_FPS = re.compile(r"([\d.]+)\s*(?:fps|tbr)")
_SAR = re.compile(r"SAR (\d+):(\d+)")
_TBN = re.compile(r"(\d+(?:\.\d+)?)(k?) tbn")
# "displaymatrix: rotation of -90.00 degrees" (ffmpeg <= 7), "Display Matrix: rotation of 90.00 degrees" (8+)
_ROTATION = re.compile(r"display ?matrix: rotation of (-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)


def parse_source_info(stderr_text: str) -> SourceInfo:
    """Reads the input section of ffmpeg's banner (the first video stream only)."""
    input_part = stderr_text.split("Stream mapping:")[0].split("Output #0")[0]
    duration = None
    match = _DURATION.search(input_part)
    if match:
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    codec = width = height = fps = None
    sample_aspect, rotation, time_base = (1, 1), 0.0, None
    lines = input_part.splitlines()
    for number, line in enumerate(lines):
        video = _VIDEO_STREAM.search(line)
        if not video:
            continue
        codec = video.group(1)
        size = _SIZE.search(line + " ")
        if size:
            width, height = int(size.group(1)), int(size.group(2))
        rate = _FPS.search(line)
        if rate:
            fps = float(rate.group(1))
        tbn = _TBN.search(line)
        if tbn:
            ticks = Fraction(tbn.group(1)) * (1000 if tbn.group(2) else 1)
            time_base = 1 / ticks if ticks > 0 else None
        aspect = _SAR.search(line)
        if aspect and int(aspect.group(1)) and int(aspect.group(2)):  # 0:1 means "unknown": square
            sample_aspect = (int(aspect.group(1)), int(aspect.group(2)))
        for following in lines[number + 1 :]:  # the stream's own metadata and side data
            if following.lstrip().startswith("Stream #"):
                break
            turned = _ROTATION.search(following)
            if turned:
                rotation = float(turned.group(1))
                break
        break
    return SourceInfo(
        duration_s=duration,
        fps=fps,
        width=width,
        height=height,
        codec=codec,
        sample_aspect=sample_aspect,
        rotation_degrees=rotation,
        time_base=time_base,
    )


# what ``metadata=mode=print`` writes for each decoded frame (our key "f" marks every frame):
# frame:73   pts:37376   pts_time:2.92
# f=1
_FRAME_LINE = re.compile(rb"^frame:\s*\d+\s+pts:\s*(-?\d+)\s+pts_time:(\S+)", re.M)


class DecodedFrameLog:
    """Follows one line per decoded frame, in memory that does not grow with the number of
    decoded frames (one float per sampling mark, not per frame).

    The ``fps`` filter with ``round=up`` and ``start_time=0`` gives output slot T the latest
    input frame whose timestamp is <= T (the frame on screen at T; the first frame for slots
    before it). The same rule applied here to the exact timestamps tells which source frame
    each sampled output shows, which the filter itself forgets.

    The lines come from a ``metadata`` filter writing to a pipe of their own through ffmpeg's
    buffered I/O: ``showinfo`` on stderr costs one write (and one wake-up of the reader) per
    field, which took a fifth of the build's speed on one core; this costs nothing measurable.
    Timestamps are integers in the stream's time base (``tbn`` in the banner); printed
    ``pts_time`` has 6 significant digits, so it is used only when the time base is unknown
    or does not match it.
    """

    def __init__(self, mark_step: Fraction) -> None:
        self.time_base: Fraction | None = None
        self.frames = 0
        self._step = mark_step
        self._mark = 0  # index of the next mark not yet given its frame
        self._mark_limit: float = 0.0  # that mark, in ticks (floor) or seconds
        self._last: float | int | None = None  # ticks when the time base is known, else seconds
        self._previous: float | int | None = None
        self._origin: float | int | None = None  # the first frame's timestamp
        self._shown_at_marks = array("d")

    def use_time_base(self, time_base: Fraction | None) -> None:
        """Set before the first frame (from the banner); None keeps printed seconds."""
        self.time_base = time_base
        self._mark_limit = self._limit(self._mark)

    def _limit(self, mark: int) -> float:
        at = mark * self._step
        origin = self._origin or 0  # marks count from the first frame (the fps filter runs on PTS-STARTPTS)
        # for integer ticks, "mark < pts" is "floor(mark in ticks) < pts": one int compare per frame
        return math.floor(at / self.time_base) + origin if self.time_base is not None else float(at) + origin

    def _seconds(self, time: float | int) -> float:
        return float(time * self.time_base) if self.time_base is not None else float(time)

    def feed_block(self, block: bytes) -> None:
        """Takes whole lines of the frame log."""
        for frame in _FRAME_LINE.finditer(block):
            pts, pts_time = int(frame.group(1)), float(frame.group(2))
            if self.time_base is not None and abs(float(pts * self.time_base) - pts_time) > 1e-4 + 1e-5 * abs(pts_time):
                self._fall_back_to_seconds()  # not the stream's time base after all
            self._add(pts if self.time_base is not None else pts_time)

    def _fall_back_to_seconds(self) -> None:
        if self._origin is not None:
            self._origin = self._seconds(self._origin)
        if self._last is not None:
            self._last = self._seconds(self._last)
        if self._previous is not None:
            self._previous = self._seconds(self._previous)
        self.time_base = None
        self._mark_limit = self._limit(self._mark)

    def _add(self, time: float | int) -> None:
        if self._origin is None:  # the first frame: time 0 of the video's own seconds
            self._origin = time
            self._mark_limit = self._limit(self._mark)
        while self._mark_limit < time:  # marks before this frame show the previous one
            shown = self._last if self._last is not None else time  # fps repeats the first frame
            self._shown_at_marks.append(self._seconds(shown))
            self._mark += 1
            self._mark_limit = self._limit(self._mark)
        self._previous, self._last = self._last, time
        self.frames += 1

    @property
    def decoded_end_s(self) -> float | None:
        """Where the decoded video ends: the last frame's timestamp plus one frame interval."""
        if self._last is None:
            return None
        interval = self._last - self._previous if self._previous is not None else 0
        return self._seconds(self._last + max(interval, 0))

    def shown_at_marks(self, count: int) -> list[float]:
        """Source timestamps of the frames on screen at the first ``count`` marks."""
        shown = list(self._shown_at_marks[:count])
        if self._last is not None:
            shown += [self._seconds(self._last)] * (count - len(shown))  # marks after the last decoded frame
        return shown


# What the demuxers and decoders print when a file is cut short or damaged. The first group
# means data is missing at the end; the second that some packets could not be decoded.
_TRUNCATION = re.compile(r"partial file|truncat|unexpected end of file|end of file reached prematurely|moov atom not found", re.I)
_DAMAGE = re.compile(
    r"corrupt|invalid data found|invalid nal|error while decoding|decoding error|missing picture|concealing|"
    r"error splitting the input|non-existing pps|no frame!|invalid frame|packet mismatch|error at mb",
    re.I,
)


def truncation_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if _TRUNCATION.search(line)]


def damage_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if _DAMAGE.search(line) or _TRUNCATION.search(line)]
