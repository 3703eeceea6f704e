"""One ffmpeg pass per video: decode, resample to the transcode rate, keep the sampled frames.

CLIP4Clip writes a 3 fps mp4 first and decodes it again with OpenCV later. Here a single
ffmpeg process applies ``fps`` -> ``select`` (every ``stride``-th frame) -> ``scale`` and
streams the surviving frames as PPM images over a pipe, so nothing is written to disk and
only the sampled frames are scaled. The 3 fps mp4 is produced in the same pass (a ``split``
branch) only when asked for.
"""

from __future__ import annotations

import collections
import io
import os
import re
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from typing import IO

import ffmpeg
import numpy as np
from PIL import Image

from pipeline.ffmpeg_binary import ffmpeg_executable, ffmpeg_major_version
from pipeline.sampling import SlicePosition, sampling_stride, select_frames


class VideoDecodeError(Exception):
    """A video that yields no usable frames; the build records it and moves on."""

    def __init__(self, path: str, reason: str, stderr_tail: str = "") -> None:
        self.path = path
        self.reason = reason
        self.stderr_tail = stderr_tail
        detail = f"\n{stderr_tail}" if stderr_tail else ""
        super().__init__(f"{path}: {reason}{detail}")

    def __reduce__(self) -> tuple:  # crosses the worker pool; default pickling loses fields
        return (VideoDecodeError, (self.path, self.reason, self.stderr_tail))


@dataclass(frozen=True)
class ExtractionSettings:
    """Everything that changes the frames in a shard; stored in every sample and the manifest."""

    transcode_fps: float = 3.0
    sample_fps: float = 1.0
    short_side: int = 224
    max_frames: int = 12
    slice_position: SlicePosition = SlicePosition.UNIFORM
    jpeg_quality: int = 95
    keep_transcode: bool = False
    max_seconds: float | None = None
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        sampling_stride(self.transcode_fps, self.sample_fps)
        if self.short_side < 0:
            raise ValueError("short_side must be >= 0 (0 keeps the source size)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")
        if self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError("max_seconds must be positive")

    def to_json(self) -> dict:
        data = asdict(self)
        data["slice_position"] = self.slice_position.value
        return data


@dataclass(frozen=True)
class SourceInfo:
    """What ffmpeg reported about the input; None where it could not tell."""

    duration_s: float | None
    fps: float | None
    width: int | None
    height: int | None
    codec: str | None


@dataclass
class ExtractedVideo:
    frames_jpeg: list[bytes]
    timestamps_s: list[float]
    width: int
    height: int
    num_candidates: int
    source: SourceInfo
    transcode_mp4: bytes | None = None
    warnings: list[str] = field(default_factory=list)


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO_STREAM = re.compile(r"Stream #0:\d+.*?: Video: (\w+)")
_SIZE = re.compile(r",\s*(\d{1,5})x(\d{1,5})[\s,]")
_FPS = re.compile(r"([\d.]+)\s*(?:fps|tbr)")


def parse_source_info(stderr_text: str) -> SourceInfo:
    """Reads the input section of ffmpeg's banner (the bundled binary has no ffprobe)."""
    input_part = stderr_text.split("Stream mapping:")[0].split("Output #0")[0]
    duration = None
    match = _DURATION.search(input_part)
    if match:
        hours, minutes, seconds = match.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    codec = width = height = fps = None
    for line in input_part.splitlines():
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
        break
    return SourceInfo(duration_s=duration, fps=fps, width=width, height=height, codec=codec)


def _scale_expressions(short_side: int) -> tuple[str, str]:
    """Short side to ``short_side`` for landscape and portrait alike (CLIP4Clip's portrait
    formula squashes the aspect ratio; this one keeps it). -2 keeps dimensions even so the
    optional H.264 branch can use yuv420p."""
    width = f"if(gte(iw,ih),-2,{short_side})"
    height = f"if(gte(iw,ih),{short_side},-2)"
    return width, height


def build_command(path: str, settings: ExtractionSettings, transcode_path: str | None) -> list[str]:
    """The argument list (never a shell string: paths come from user annotations)."""
    input_kwargs = {"t": settings.max_seconds} if settings.max_seconds else {}
    video = ffmpeg.input(path, **input_kwargs).video.filter("fps", fps=settings.transcode_fps)

    def scaled(stream):  # scaling after select touches 1 frame in `stride`, not all of them
        if not settings.short_side:
            return stream
        return stream.filter("scale", *_scale_expressions(settings.short_side))

    outputs = []
    if transcode_path is not None:
        branches = video.split()
        video = branches[0]
        outputs.append(
            ffmpeg.output(
                scaled(branches[1]),
                transcode_path,
                vcodec="libx264",
                pix_fmt="yuv420p",
                preset="veryfast",
                crf=23,
                an=None,
                format="mp4",
            )
        )
    stride = sampling_stride(settings.transcode_fps, settings.sample_fps)
    sampled = scaled(video.filter("select", f"not(mod(n,{stride}))"))
    sync = {"fps_mode": "passthrough"} if ffmpeg_major_version() >= 5 else {"vsync": "passthrough"}
    outputs.insert(0, ffmpeg.output(sampled, "pipe:", format="image2pipe", vcodec="ppm", **sync))
    merged = ffmpeg.merge_outputs(*outputs) if len(outputs) > 1 else outputs[0]
    args = merged.compile(cmd=ffmpeg_executable(), overwrite_output=True)
    # -nostdin: a worker must never block on a terminal; -hide_banner keeps stderr small
    return [args[0], "-nostdin", "-hide_banner", *args[1:]]


def _read_ppm_frames(stream: IO[bytes], path: str) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    while True:
        magic = stream.readline()
        if not magic:
            return frames
        if magic.strip() != b"P6":
            raise VideoDecodeError(path, f"unexpected data from ffmpeg: {magic[:20]!r}")
        dims = stream.readline().split()
        maxval = stream.readline().strip()
        if len(dims) != 2 or maxval != b"255":
            raise VideoDecodeError(path, "malformed PPM header from ffmpeg")
        width, height = int(dims[0]), int(dims[1])
        size = width * height * 3
        payload = stream.read(size)
        if len(payload) != size:
            raise VideoDecodeError(path, "ffmpeg output ended inside a frame")
        frames.append(np.frombuffer(payload, dtype=np.uint8).reshape(height, width, 3))


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _run_ffmpeg(args: list[str], path: str, timeout_s: float) -> tuple[list[np.ndarray], str, int]:
    """Runs ffmpeg with stderr drained on a thread (a full stderr pipe would deadlock it)
    and a watchdog that kills it after ``timeout_s``."""
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the head holds the input banner (parsed for source info), the tail the final error
    header_lines: list[str] = []
    tail_lines: collections.deque[str] = collections.deque(maxlen=50)

    def drain() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if len(header_lines) < 200:
                header_lines.append(line)
            else:
                tail_lines.append(line)

    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        process.kill()

    drainer = threading.Thread(target=drain, daemon=True)
    watchdog = threading.Timer(timeout_s, kill)
    drainer.start()
    watchdog.start()
    read_error: VideoDecodeError | None = None
    frames: list[np.ndarray] = []
    try:
        assert process.stdout is not None
        try:
            frames = _read_ppm_frames(process.stdout, path)
        except VideoDecodeError as error:  # may only be the kill cutting a frame in half
            read_error = error
        finally:
            process.stdout.close()
        returncode = process.wait()
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        drainer.join(timeout=5)
    if timed_out.is_set():  # the watchdog's kill explains whatever the reader saw
        raise VideoDecodeError(path, f"ffmpeg timed out after {timeout_s:g} s") from read_error
    if read_error is not None:
        raise read_error
    return frames, "\n".join(header_lines + list(tail_lines)), returncode


def extract_video(path: str, settings: ExtractionSettings) -> ExtractedVideo:
    """Decodes ``path`` once and returns the selected frames as JPEG bytes.

    Raises VideoDecodeError for anything without at least one decodable frame: a clip of
    zeros would train the model on nothing and hide the problem.
    """
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "file is empty")
    with tempfile.TemporaryDirectory(prefix="pipeline-") as scratch:
        transcode_path = os.path.join(scratch, "transcode.mp4") if settings.keep_transcode else None
        args = build_command(path, settings, transcode_path)
        candidates, stderr_text, returncode = _run_ffmpeg(args, path, settings.timeout_s)
        # drop ffmpeg's "[ctx @ 0x55...]" pointers so failure reports are the same on every run
        # (indented lines are the input banner, not the error)
        errors = [line for line in stderr_text.splitlines() if line and not line[0].isspace()]
        tail = re.sub(r" @ 0x[0-9a-f]+", "", "\n".join(errors[-4:]))
        if returncode != 0:
            raise VideoDecodeError(path, f"ffmpeg exited with code {returncode}", tail)
        if not candidates:
            raise VideoDecodeError(path, "no video frames decoded", tail)
        transcode_mp4 = None
        if transcode_path is not None:
            with open(transcode_path, "rb") as handle:
                transcode_mp4 = handle.read()
    keep = select_frames(len(candidates), settings.max_frames, settings.slice_position)
    height, width = candidates[keep[0]].shape[:2]
    return ExtractedVideo(
        frames_jpeg=[_encode_jpeg(candidates[i], settings.jpeg_quality) for i in keep],
        timestamps_s=[i / settings.sample_fps for i in keep],
        width=width,
        height=height,
        num_candidates=len(candidates),
        source=parse_source_info(stderr_text),
        transcode_mp4=transcode_mp4,
    )
