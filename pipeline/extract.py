"""One ffmpeg pass per video: decode, resample to the transcode rate, keep the sampled frames.

CLIP4Clip writes a 3 fps mp4 first and decodes it again with OpenCV later. Here a single
ffmpeg process applies ``metadata`` (a log line per decoded frame) -> ``fps`` -> ``select``
(every ``stride``-th frame) ->
``scale`` and streams the surviving frames as 8-bit RGB PPM images over a pipe, so nothing is
written to disk and only the sampled frames are scaled. The 3 fps mp4 is produced in the
same pass (a ``split`` branch) only when asked for.

Choices that make the frames what the README promises, on the files people really have:

- ``fps`` rounds *up*, from time 0: transcode slot T shows the frame on screen at T/fps (the
  latest frame whose timestamp is <= T/fps), so sampled frame k is the frame shown at second
  k. ffmpeg's default rounding shows the frame 0.16-0.3 s after the mark instead, and drops a
  one-frame clip entirely. A ``metadata`` filter logs every decoded frame's exact timestamp
  to a pipe of its own, from
  which the source time of each kept frame is recorded (``DecodedFrameLog``).
- ``scale`` works on the *display* size (stored width x sample aspect ratio; rotation is
  applied by ffmpeg before the filters) and its output is taken as square pixels, so a 16:9
  DVD stored as 720x480 comes out ~398x224, not squashed to 336x224.
- The pipe asks for ``rgb24``: for 10-bit or 4:2:2 sources ffmpeg would otherwise pick 16-bit
  RGB for PPM.
- Frames are chosen while they stream (``StreamingFrameChooser``): memory per worker does not
  grow with the clip's duration.
- A file whose decoded frames end well before the duration its header promises, or whose
  demuxer reports a partial file, is a failure unless ``allow_partial`` (then it is kept and
  flagged): a truncated download must not pass as a whole clip.
"""

from __future__ import annotations

import collections
import io
import os
import re
import resource
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import IO

import ffmpeg
import numpy as np
from PIL import Image

from pipeline.ffmpeg_binary import ffmpeg_executable, ffmpeg_major_version
from pipeline.ffmpeg_log import DecodedFrameLog, SourceInfo, damage_lines, parse_source_info, truncation_lines
from pipeline.frame_choice import StreamingFrameChooser, predicted_candidates
from pipeline.sampling import SlicePosition, sampling_stride

__all__ = ["DecodeGuards", "DecodeLimitError", "ExtractedVideo", "ExtractionSettings", "SourceInfo", "VideoDecodeError", "extract_video",
           "parse_source_info"]


class VideoDecodeError(Exception):
    """A video that yields no usable frames; the build records it and moves on."""

    def __init__(self, path: str, reason: str, stderr_tail: str = "") -> None:
        self.path = path
        self.reason = reason
        self.stderr_tail = stderr_tail
        detail = f"\n{stderr_tail}" if stderr_tail else ""
        super().__init__(f"{path}: {reason}{detail}")

    def __reduce__(self) -> tuple:  # crosses the worker pool; default pickling loses fields
        return (type(self), (self.path, self.reason, self.stderr_tail))


class DecodeLimitError(VideoDecodeError):
    """A decode stopped by one of its ``DecodeGuards`` (or its wall time): the file costs more than the
    caller allows, or the caller went away. Not a fault of the file's bytes."""


@dataclass(frozen=True)
class DecodeGuards:
    """Bounds on one decode made for someone else (a query file uploaded to the search service), on top of
    the wall time in ``ExtractionSettings.timeout_s``. The builder uses none of them: its inputs are the
    user's own videos.

    - ``check_source``: called with the input banner as soon as ffmpeg has printed it, before the first
      frame is decoded; a sentence it returns refuses the file (the child is killed at once). This is the
      probe: duration, frame rate and size come from the header, in the same process that would decode.
    - ``address_space_bytes``: RLIMIT_AS of the ffmpeg child; an allocation past it fails inside ffmpeg.
    - ``cancel``: an event that kills the child the moment it is set (the client disconnected).
    - ``single_pass``: never decode a second time. A file whose header tells no duration has its sampling
      candidates held up to ``ExtractionSettings.max_seconds`` instead (which must then be set).
    - ``threads``: decoder and filter threads of the child (ffmpeg's default is one per core). Bounds the
      CPU one decode takes, and makes its address space the same on every machine, so one
      ``address_space_bytes`` fits a laptop and a 64-core server. Frames are the same for any count
      (threaded H.264 decoding and sliced scaling are exact).

    An address-space cap is blunt: ffmpeg under it may fail an allocation (reported as the memory limit),
    or stall; the wall time ends a stall. Set it well above what real files need (README: The search service)."""

    check_source: Callable[[SourceInfo], str | None] | None = None
    address_space_bytes: int | None = None
    cancel: threading.Event | None = None
    single_pass: bool = False
    threads: int | None = None


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
    allow_partial: bool = False  # keep what a truncated file decoded (flagged) instead of failing it

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

    @property
    def mark_step(self) -> Fraction:
        """Seconds between two sampling marks, exactly (1/sample_fps)."""
        return 1 / Fraction(str(self.sample_fps))


@dataclass
class ExtractedVideo:
    frames_jpeg: list[bytes]
    timestamps_s: list[float]  # source time of each kept frame (the frame on screen at its mark)
    sampled_at_s: list[float]  # the mark each kept frame stands for: k / sample_fps
    width: int
    height: int
    num_candidates: int
    source: SourceInfo
    decoded_s: float | None = None  # where the decoded frames end
    decoded_frames: int = 0  # frames the decoder handed to the filters (a segment's, not the file's)
    partial: bool = False  # a truncated file kept because allow_partial was set
    transcode_mp4: bytes | None = None
    warnings: list[str] = field(default_factory=list)


def _scale_expressions(short_side: int) -> tuple[str, str]:
    """Scale by the *display* aspect (``dar`` = iw/ih x sar), short side to ``short_side``,
    landscape and portrait alike (CLIP4Clip's portrait formula squashes the aspect ratio; this
    one keeps it). Each free side is rounded to an even number the way ffmpeg's own ``-2``
    rounds, so square-pixel sources come out exactly as before, and the optional H.264 branch
    can use yuv420p. ``short_side`` 0 keeps the stored height and stretches (or narrows) the
    width to square pixels."""
    if not short_side:
        return "if(eq(sar,1),iw,2*round(iw*sar/2))", "ih"
    width = f"if(gte(dar,1),2*round({short_side}*dar/2),{short_side})"
    height = f"if(gte(dar,1),{short_side},2*round({short_side}/dar/2))"
    return width, height


Span = tuple[float, float | None]  # [start, end) seconds of a segment; end None: to the end


def _span_length(settings: ExtractionSettings, span: Span | None) -> float | None:
    """How many seconds from the start (of the file or the segment) are decoded at most."""
    limits = [settings.max_seconds] if settings.max_seconds else []
    if span is not None and span[1] is not None:
        limits.append(span[1] - span[0])
    return min(limits) if limits else None


def _input_options(path: str, settings: ExtractionSettings, span: Span | None, threads: int | None = None) -> dict:
    # a stream that changes resolution mid-way (MPEG-TS broadcasts, concatenated segments) must not
    # rebuild the filter graph: a new fps filter would start again at time 0 and repeat frames
    # (scale adapts to the new size by itself)
    options: dict = {"reinit_filter": 0}
    if threads is not None:
        options["threads"] = threads
    if span is not None and span[0] > 0:
        options["ss"] = f"{span[0]:.6f}"  # before -i: the demuxer seeks, then decoding is exact (accurate_seek)
    length = _span_length(settings, span)
    if length is not None:
        options["t"] = f"{length:.6f}"
    if path.startswith(("http://", "https://")):
        # a dropped connection resumes where it stopped; a stalled one ends after 30 s
        options.update(reconnect=1, reconnect_on_network_error=1, reconnect_delay_max=4, rw_timeout=30_000_000)
    return options


def build_command(
    path: str,
    settings: ExtractionSettings,
    transcode_path: str | None,
    frame_log_fd: int | None = None,
    span: Span | None = None,
    threads: int | None = None,
) -> list[str]:
    """The argument list (never a shell string: paths come from user annotations).

    ``frame_log_fd``: a pipe the child inherits; every decoded frame's timestamp is printed
    there (``DecodedFrameLog`` reads it). ``span``: decode only this segment; timestamps in the
    filters then count from its start. ``threads``: decoder and filter threads (None: one per core)."""
    video = ffmpeg.input(path, **_input_options(path, settings, span, threads)).video
    if frame_log_fd is not None:  # print mode prints only frames carrying the key: tag them all
        video = video.filter("metadata", mode="add", key="f", value="1").filter(
            "metadata", mode="print", key="f", file=f"pipe:{frame_log_fd}"
        )
    # sample the video's own seconds: its first frame is time 0 even where the container starts
    # earlier (a video stream 1.5 s behind its audio would otherwise fill seconds 0 and 1 with
    # copies of its first frame). The frame log above keeps the source times; DecodedFrameLog
    # counts its marks from the first frame, as the shifted fps filter does.
    video = video.filter("setpts", "PTS-STARTPTS")
    video = video.filter("fps", fps=settings.transcode_fps, round="up", start_time=0)

    def scaled(stream):  # scaling after select touches 1 frame in `stride`, not all of them
        return stream.filter("scale", *_scale_expressions(settings.short_side))

    outputs = []
    if transcode_path is not None:
        branches = video.split()
        video = branches[0]
        outputs.append(
            ffmpeg.output(
                # square pixels in the mp4 too; PPM has no aspect field (and a filter between
                # scale and the pipe would make ffmpeg convert to RGB in a second pass: 3x slower)
                scaled(branches[1]).filter("setsar", "1"),
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
    outputs.insert(0, ffmpeg.output(sampled, "pipe:", format="image2pipe", vcodec="ppm", pix_fmt="rgb24", **sync))
    merged = ffmpeg.merge_outputs(*outputs) if len(outputs) > 1 else outputs[0]
    args = merged.compile(cmd=ffmpeg_executable(), overwrite_output=True)
    # -nostdin: a worker must never block on a terminal; -hide_banner keeps stderr small
    bounded = [] if threads is None else ["-filter_threads", str(threads)]
    return [args[0], "-nostdin", "-hide_banner", *bounded, *args[1:]]


def _read_ppm_frames(stream: IO[bytes], path: str, on_frame: Callable[[np.ndarray], None]) -> None:
    """Hands each frame to ``on_frame`` as it arrives; nothing is accumulated here."""
    while True:
        magic = stream.readline()
        if not magic:
            return
        if magic.strip() != b"P6":
            raise VideoDecodeError(path, f"unexpected data from ffmpeg: {magic[:20]!r}")
        dims = stream.readline().split()
        maxval = stream.readline().strip()
        if len(dims) != 2:
            raise VideoDecodeError(path, "malformed PPM header from ffmpeg")
        if maxval != b"255":  # rgb24 is asked for; anything else is a decoder/filter surprise
            raise VideoDecodeError(path, f"ffmpeg sent {maxval.decode(errors='replace')}-level frames where 8-bit RGB was asked for")
        width, height = int(dims[0]), int(dims[1])
        size = width * height * 3
        payload = stream.read(size)
        if len(payload) != size:
            raise VideoDecodeError(path, "ffmpeg output ended inside a frame")
        on_frame(np.frombuffer(payload, dtype=np.uint8).reshape(height, width, 3))


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@dataclass
class FfmpegRun:
    """What one ffmpeg process left behind besides its frames."""

    returncode: int
    stderr_text: str  # the banner and the last lines
    damage: list[str]  # demuxer/decoder complaints, the first few
    source: SourceInfo  # the input banner, parsed once


_MAX_DAMAGE_LINES = 20


def _run_ffmpeg(
    args: list[str],
    path: str,
    timeout_s: float,
    on_frame: Callable[[np.ndarray], None],
    frame_log: DecodedFrameLog | None = None,
    frame_log_pipe: tuple[int, int] | None = None,
    on_banner: Callable[[SourceInfo], None] | None = None,
    guards: DecodeGuards | None = None,
) -> FfmpegRun:
    """Runs ffmpeg with stderr (and the frame log pipe) drained on threads (a full pipe would
    deadlock it) and a watchdog that kills it after ``timeout_s`` or when ``guards.cancel`` is set.
    ``on_banner`` gets the input banner before the first frame is handed over (the frame chooser
    needs the duration); ``guards.check_source`` gets it as soon as it is printed.
    ``frame_log_pipe``: (read end, write end) of the pipe ``args`` name for the frame log; both
    are closed here."""
    guards = guards or DecodeGuards()
    try:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(frame_log_pipe[1],) if frame_log_pipe else (),
        )
        if guards.address_space_bytes is not None:
            _cap_address_space(process, guards.address_space_bytes)
    except BaseException:
        if frame_log_pipe:
            os.close(frame_log_pipe[0])
        raise
    finally:
        if frame_log_pipe:
            os.close(frame_log_pipe[1])  # the child holds its copy; EOF comes when it exits
    # the head holds the input banner (parsed for source info), the tail the final error
    header_lines: list[str] = []
    tail_lines: collections.deque[str] = collections.deque(maxlen=50)
    damage: list[str] = []
    banner_read = threading.Event()
    banner: list[SourceInfo] = []  # set once, by the stderr thread, before banner_read
    stopped: list[str] = []  # why the watchdog or the source check killed the child: "timeout", "cancel" or a refusal

    def stop(why: str) -> None:
        if not stopped:
            stopped.append(why)
        process.kill()

    def banner_done() -> None:
        if not banner_read.is_set():
            banner.append(parse_source_info("\n".join(header_lines)))
            banner_read.set()
            refusal = guards.check_source(banner[0]) if guards.check_source is not None else None
            if refusal:
                stop(refusal)

    def keep(line: str) -> None:
        if not banner_read.is_set() and (line.startswith("Stream mapping:") or line.startswith("Output #0")):
            banner_done()
        # only ffmpeg's "[context] message" lines, the input's name masked (it may say "truncated")
        if len(damage) < _MAX_DAMAGE_LINES and line.startswith("[") and damage_lines([line.replace(path, "<input>")]):
            damage.append(line)
        if len(header_lines) < 200:
            header_lines.append(line)
        else:
            tail_lines.append(line)

    def drain() -> None:
        assert process.stderr is not None
        try:
            for raw in process.stderr:
                keep(raw.decode("utf-8", "replace").rstrip())
        finally:
            banner_done()  # no banner line (an input ffmpeg could not open): what there is

    def read_frame_log() -> None:
        assert frame_log is not None and frame_log_pipe is not None
        with os.fdopen(frame_log_pipe[0], "rb", buffering=0) as pipe:
            banner_read.wait(timeout=30)  # the stream's time base is in the banner
            frame_log.use_time_base(banner[0].time_base if banner else None)
            carry = b""
            while chunk := pipe.read(1 << 16):
                block, _, carry = (carry + chunk).rpartition(b"\n")
                frame_log.feed_block(block)
            frame_log.feed_block(carry)

    finished = threading.Event()

    def watch() -> None:  # the wall-time limit and the caller's cancel, checked 20 times a second
        deadline = time.monotonic() + timeout_s
        while not finished.wait(0.05):
            if guards.cancel is not None and guards.cancel.is_set():
                return stop("cancel")
            if time.monotonic() >= deadline:
                return stop("timeout")
        return None

    first_frame = True

    def frame_after_banner(frame: np.ndarray) -> None:
        nonlocal first_frame
        if first_frame:
            first_frame = False
            banner_read.wait(timeout=30)  # ffmpeg prints the banner before any frame
            if on_banner is not None:
                on_banner(banner[0] if banner else parse_source_info(""))
        on_frame(frame)

    drainer = threading.Thread(target=drain, daemon=True)
    readers = [drainer]
    if frame_log_pipe is not None:
        readers.append(threading.Thread(target=read_frame_log, daemon=True))
    watchdog = threading.Thread(target=watch, daemon=True)
    for reader in readers:
        reader.start()
    watchdog.start()
    read_error: VideoDecodeError | None = None
    try:
        assert process.stdout is not None
        try:
            _read_ppm_frames(process.stdout, path, frame_after_banner)
        except VideoDecodeError as error:  # may only be the kill cutting a frame in half
            read_error = error
        finally:
            process.stdout.close()
        returncode = process.wait()
    finally:
        finished.set()
        if process.poll() is None:
            process.kill()
            process.wait()
        watchdog.join(timeout=5)
        for reader in readers:
            reader.join(timeout=5)
    if stopped == ["timeout"]:  # the watchdog's kill explains whatever the reader saw
        raise DecodeLimitError(path, f"ffmpeg timed out after {timeout_s:g} s") from read_error
    if stopped == ["cancel"]:
        raise DecodeLimitError(path, "the decode was cancelled (its caller went away)") from read_error
    if stopped:
        raise DecodeLimitError(path, stopped[0]) from read_error
    stderr_text = "\n".join(header_lines + list(tail_lines))
    if guards.address_space_bytes is not None and returncode != 0 and _out_of_memory(returncode, stderr_text):
        raise _over_memory(path, guards.address_space_bytes)
    if read_error is not None:
        raise read_error
    source = banner[0] if banner else parse_source_info("\n".join(header_lines))
    return FfmpegRun(returncode, stderr_text, damage, source)


def _cap_address_space(process: subprocess.Popen, limit_bytes: int) -> None:
    """RLIMIT_AS on the running child (prlimit), set right after it started: ffmpeg is still parsing its
    arguments then, long before a decoder allocates frames. Not a ``preexec_fn``: that forces a fork of
    the whole parent for every decode, a cost that grows with the parent's memory (the search service
    holds torch and a model)."""
    try:
        resource.prlimit(process.pid, resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    except (ProcessLookupError, PermissionError):  # it already exited (its returncode says how)
        pass


def _over_memory(path: str, limit_bytes: int) -> DecodeLimitError:
    return DecodeLimitError(path, f"decoding needed more than its memory limit of {limit_bytes / (1 << 20):,.0f} MB")


def _out_of_memory(returncode: int, stderr_text: str) -> bool:
    """Whether a failed ffmpeg ran into its address-space cap: an allocation error in its log, or death
    by a signal (a failed allocation in a codec can end in abort or a segmentation fault)."""
    text = stderr_text.lower()
    # a thread that cannot get its stack fails with EAGAIN ("Resource temporarily unavailable")
    return returncode < 0 or any(sign in text for sign in ("cannot allocate memory", "out of memory", "resource temporarily unavailable"))


def _report_lines(lines: list[str]) -> str:
    """ffmpeg's error lines without their "[ctx @ 0x55...]" pointers, so failure reports are
    the same on every run."""
    text = re.sub(r" @ 0x[0-9a-f]+", "", "\n".join(lines))
    return re.sub(r"pipe(\\*):\d+", r"pipe\1:N", text)  # the frame log's descriptor differs between runs


def _error_tail(stderr_text: str) -> str:
    errors = [line for line in stderr_text.splitlines() if line and not line[0].isspace()]  # indented: the banner
    return _report_lines(errors[-4:])


@dataclass
class _Decoded:
    chosen: list[tuple[int, np.ndarray]] | None
    candidates: int
    log: DecodedFrameLog
    run: FfmpegRun
    source: SourceInfo


def _decode_once(
    path: str,
    settings: ExtractionSettings,
    transcode_path: str | None,
    known_count: int | None,
    span: Span | None,
    guards: DecodeGuards | None = None,
) -> _Decoded:
    log = DecodedFrameLog(settings.mark_step)
    chooser: StreamingFrameChooser | None = None
    bound: int | None = None  # a single pass over a file of no declared duration holds this many candidates, no more

    def make_chooser(banner: SourceInfo) -> None:
        nonlocal chooser, bound
        if known_count is not None:
            chooser = StreamingFrameChooser.for_known_count(settings.max_frames, settings.slice_position, known_count)
            return
        duration = banner.duration_s
        if duration is not None and span is not None:
            duration -= span[0]
        predicted = predicted_candidates(duration, settings.sample_fps, _span_length(settings, span))
        if predicted is None and guards is not None and guards.single_pass:  # no second decode: hold every count up to the bound
            bound = predicted_candidates(_span_length(settings, span), settings.sample_fps, None) or 1
            chooser = StreamingFrameChooser.for_count_up_to(settings.max_frames, settings.slice_position, bound)
            return
        chooser = StreamingFrameChooser.for_prediction(settings.max_frames, settings.slice_position, predicted)

    def offer(frame: np.ndarray) -> None:
        assert chooser is not None
        if bound is not None and chooser.offered >= bound:  # stop now: the rest could only be refused after decoding it
            raise DecodeLimitError(path, f"its frames run past the {settings.max_seconds:g} s decoded at most, which its header did not say")
        chooser.offer(frame)

    pipe = os.pipe()
    try:
        args = build_command(path, settings, transcode_path, frame_log_fd=pipe[1], span=span, threads=guards.threads if guards else None)
    except BaseException:
        os.close(pipe[0])
        os.close(pipe[1])
        raise
    run = _run_ffmpeg(args, path, settings.timeout_s, offer, log, pipe, make_chooser, guards)
    source = run.source
    if chooser is None:  # no frame came out
        return _Decoded([], 0, log, run, source)
    return _Decoded(chooser.chosen(), chooser.offered, log, run, source)


def _truncation(decoded: _Decoded, settings: ExtractionSettings, span: Span | None) -> str | None:
    """Why the decoded frames are not the whole file (or segment), or None when they are."""
    cut = truncation_lines(decoded.run.damage)
    promised = decoded.source.duration_s
    if promised is not None and span is not None:
        promised -= span[0]
    length = _span_length(settings, span)
    if promised is not None and length is not None:
        promised = min(promised, length)
    ended = decoded.log.decoded_end_s
    # the container's duration includes audio, which often outlasts the video by a little
    if promised is not None and ended is not None and promised - ended > max(1.0, 0.05 * promised):
        return f"truncated: frames end at {ended:.2f} s of the {promised:.2f} s the header promises"
    if cut:
        return "truncated: " + _report_lines(cut[:1]).split("] ", 1)[-1]
    return None


def extract_video(
    path: str, settings: ExtractionSettings, span: Span | None = None, name: str | None = None, guards: DecodeGuards | None = None
) -> ExtractedVideo:
    """Decodes ``path`` (a file or an http(s) URL) once and returns the selected frames as JPEG.

    Raises VideoDecodeError for anything without at least one decodable frame (a clip of
    zeros would train the model on nothing and hide the problem), and for a truncated file
    unless ``settings.allow_partial``. ``span`` decodes one segment; the timestamps returned
    are still the source's. ``name`` is what errors call the video (a signed URL must not
    end up in a failure report). ``guards``: bounds for a decode made for someone else
    (``DecodeGuards``); a decode they stop raises ``DecodeLimitError``.
    """
    if guards is not None and guards.single_pass and settings.max_seconds is None:
        raise ValueError("a single-pass decode needs settings.max_seconds (the bound on a file that declares no duration)")
    try:
        return _extract(path, settings, span, guards)
    except VideoDecodeError as error:
        if name is None or name == path:
            raise
        raise type(error)(name, error.reason.replace(path, name), error.stderr_tail.replace(path, name)) from None


def _extract(path: str, settings: ExtractionSettings, span: Span | None, guards: DecodeGuards | None) -> ExtractedVideo:
    if span is not None and span[1] is not None and span[1] <= span[0]:
        raise VideoDecodeError(path, f"segment end {span[1]:g} s is not after its start {span[0]:g} s")
    if not path.startswith(("http://", "https://")):
        if not os.path.isfile(path):
            raise VideoDecodeError(path, "file not found")
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(path, "file is empty")
    with tempfile.TemporaryDirectory(prefix="pipeline-") as scratch:
        transcode_path = os.path.join(scratch, "transcode.mp4") if settings.keep_transcode else None
        decoded = _decode_once(path, settings, transcode_path, None, span, guards)
        if decoded.chosen is None and guards is not None and guards.single_pass:  # a header whose duration is wrong: no second decode
            raise DecodeLimitError(path, f"its header's duration is wrong ({decoded.candidates} sampling marks decoded), and a second "
                                         "decode to count them is not made for it")
        if decoded.chosen is None:  # the header's duration was off: decode again, count known
            again = _decode_once(path, settings, transcode_path, decoded.candidates, span, guards)
            if again.candidates != decoded.candidates or again.chosen is None:
                raise VideoDecodeError(path, f"ffmpeg gave {decoded.candidates} then {again.candidates} frames for the same file")
            decoded = again
        tail = _error_tail(decoded.run.stderr_text)
        capped = guards is not None and guards.address_space_bytes is not None
        if capped and decoded.log.frames and not decoded.candidates:  # under its cap ffmpeg can lose every frame silently
            raise _over_memory(path, guards.address_space_bytes)
        if decoded.run.returncode != 0:
            reason = f"ffmpeg exited with code {decoded.run.returncode}"
            if "matches no streams" in tail or "does not contain any stream" in tail:
                reason += ": the file has no video stream"
            elif re.search(r"\b404\b", tail):
                reason += ": not found (HTTP 404)"
            elif re.search(r"\b(401|403)\b", tail):
                reason += ": access denied (HTTP 401/403)"
            raise VideoDecodeError(path, reason, tail)
        if not decoded.candidates:
            duration = decoded.source.duration_s
            if span is not None and duration is not None and span[0] >= duration:
                raise VideoDecodeError(path, f"segment starts at {span[0]:g} s, after the video ends ({duration:.2f} s)")
            reason = "no video frames decoded" if not decoded.log.frames else f"{decoded.log.frames} frames decoded but none sampled"
            raise VideoDecodeError(path, reason, tail)
        truncated = _truncation(decoded, settings, span)
        if truncated and not settings.allow_partial:
            raise VideoDecodeError(path, truncated + " (--allow-partial keeps what decoded)", _report_lines(decoded.run.damage[-4:]))
        transcode_mp4 = None
        if transcode_path is not None:
            with open(transcode_path, "rb") as handle:
                transcode_mp4 = handle.read()
    assert decoded.chosen is not None
    indices = [i for i, _ in decoded.chosen]
    shown = decoded.log.shown_at_marks(decoded.candidates)
    height, width = decoded.chosen[0][1].shape[:2]
    # a kept partial file says so; damage ffmpeg concealed is kept but written down
    warnings = ([truncated] if truncated else []) + [_report_lines([line]) for line in decoded.run.damage[:5]]
    offset = span[0] if span is not None else 0.0  # a segment's filters count from its start
    return ExtractedVideo(
        frames_jpeg=[_encode_jpeg(frame, settings.jpeg_quality) for _, frame in decoded.chosen],
        timestamps_s=[round(offset + shown[i], 6) for i in indices],
        sampled_at_s=[round(offset + float(i * settings.mark_step), 6) for i in indices],
        width=width,
        height=height,
        num_candidates=decoded.candidates,
        source=decoded.source,
        decoded_s=None if decoded.log.decoded_end_s is None else round(offset + decoded.log.decoded_end_s, 6),
        partial=bool(truncated),
        decoded_frames=decoded.log.frames,
        transcode_mp4=transcode_mp4,
        warnings=warnings,
    )
