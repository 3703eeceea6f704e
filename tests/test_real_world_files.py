"""The files people really have (issue 13): each kind is made here with the bundled ffmpeg.

Display aspect and rotation, 10-bit and 4:2:2 sources, one-frame clips and stills, truncated
downloads, memory that does not grow with duration, containers found by id, and the exact
source frame kept at each second.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.extract import ExtractionSettings, VideoDecodeError, extract_video
from pipeline.ffmpeg_binary import ffmpeg_executable

FFMPEG_QUIET = ["-nostdin", "-y", "-loglevel", "error"]


def make(path: Path, *args: str) -> Path:
    """ffmpeg with a generated source; ``args`` are everything between the binary and the file."""
    subprocess.run([ffmpeg_executable(), *FFMPEG_QUIET, *args, str(path)], check=True, capture_output=True)
    return path


def lavfi_source(size: str, seconds: float, rate: int = 25) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}", "-t", str(seconds)]


def jpeg_size(jpeg: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(jpeg)).size


def write_frame_coded_video(path: Path, fps: str, count: int) -> Path:
    """Lossless video whose grey level is 2 x its frame index: shows *which* frame was kept."""
    frames = np.repeat(np.arange(count, dtype=np.uint8)[:, None, None] * 2, 16 * 16, axis=1).reshape(count, 16, 16)
    args = ["-f", "rawvideo", "-pix_fmt", "gray", "-s", "16x16", "-r", fps, "-i", "pipe:", "-c:v", "ffv1", str(path)]
    subprocess.run([ffmpeg_executable(), *FFMPEG_QUIET, *args], input=frames.tobytes(), check=True)
    return path


def frame_index(jpeg: bytes) -> int:
    return int(round(np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float64).mean() / 2))


# --- 1. display aspect and rotation -------------------------------------------------------


@pytest.mark.parametrize(("sar", "display", "frames"), [("32/27", (853, 480), (398, 224)), ("8/9", (640, 480), (298, 224))])
def test_anamorphic_video_is_scaled_by_its_display_aspect(tmp_path, sar, display, frames):
    path = make(tmp_path / "dvd.mp4", *lavfi_source("720x480", 2), "-vf", f"setsar={sar}", "-c:v", "libx264", "-pix_fmt", "yuv420p")
    video = extract_video(str(path), ExtractionSettings())
    assert (video.source.width, video.source.height) == (720, 480)  # stored
    assert video.source.display_size == display
    assert (video.width, video.height) == frames  # square pixels, short side 224
    assert all(jpeg_size(j) == frames for j in video.frames_jpeg)
    native = extract_video(str(path), ExtractionSettings(short_side=0))
    assert (native.width, native.height) == (display[0] + display[0] % 2, 480)


def test_rotated_phone_clip_is_portrait_in_frames_and_metadata(tmp_path):
    landscape = make(tmp_path / "stored.mp4", *lavfi_source("640x360", 2), "-c:v", "libx264", "-pix_fmt", "yuv420p")
    from pipeline.ffmpeg_binary import ffmpeg_major_version

    if ffmpeg_major_version() >= 7:
        rotated = make(tmp_path / "phone.mp4", "-display_rotation", "90", "-i", str(landscape), "-c", "copy")
    else:  # older builds set the rotation as stream metadata
        rotated = make(tmp_path / "phone.mp4", "-i", str(landscape), "-c", "copy", "-metadata:s:v", "rotate=90")
    video = extract_video(str(rotated), ExtractionSettings())
    assert (video.source.width, video.source.height) == (640, 360)
    assert abs(video.source.rotation_degrees) == 90
    assert video.source.display_size == (360, 640)
    assert (video.width, video.height) == (224, 398)


# --- 2. high bit depth and 4:2:2 ----------------------------------------------------------

HIGH_BIT_DEPTH = {
    "prores_422_10bit.mov": ["-c:v", "prores_ks", "-pix_fmt", "yuv422p10le"],
    "h264_high10.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv420p10le"],
    "h264_422.mp4": ["-c:v", "libx264", "-pix_fmt", "yuv422p"],
    "hevc_main10_hlg.mp4": [
        *("-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error"),
        *("-color_trc", "arib-std-b67", "-color_primaries", "bt2020", "-colorspace", "bt2020nc"),
    ],
}


@pytest.mark.parametrize("name", sorted(HIGH_BIT_DEPTH))
def test_high_bit_depth_and_422_sources_decode_to_8bit_frames(tmp_path, name):
    reference = extract_video(str(make(tmp_path / "ref.mp4", *lavfi_source("320x240", 3), "-c:v", "libx264", "-qp", "0")), ExtractionSettings())
    video = extract_video(str(make(tmp_path / name, *lavfi_source("320x240", 3), *HIGH_BIT_DEPTH[name])), ExtractionSettings())
    assert video.num_candidates == 3 and (video.width, video.height) == (298, 224)
    for ours, theirs in zip(video.frames_jpeg, reference.frames_jpeg, strict=True):  # same picture, not noise
        difference = np.abs(np.asarray(Image.open(io.BytesIO(ours)), float) - np.asarray(Image.open(io.BytesIO(theirs)), float))
        assert difference.mean() < 12


def test_an_unexpected_pixel_depth_is_named_not_called_a_malformed_header():
    from pipeline.extract import _read_ppm_frames

    sixteen_bit = io.BytesIO(b"P6\n2 2\n65535\n" + bytes(24))
    with pytest.raises(VideoDecodeError, match="65535-level frames where 8-bit RGB was asked for"):
        _read_ppm_frames(sixteen_bit, "clip.mov", lambda frame: None)


# --- 3. one frame ---------------------------------------------------------------------------


def test_one_frame_clip_and_still_image_are_one_frame_samples(tmp_path):
    one = make(tmp_path / "one.mp4", *lavfi_source("320x240", 1), "-frames:v", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p")
    still = make(tmp_path / "still.png", *lavfi_source("320x240", 1), "-frames:v", "1")
    for path in (one, still):
        video = extract_video(str(path), ExtractionSettings())
        assert video.num_candidates == 1 and len(video.frames_jpeg) == 1
        assert video.timestamps_s == [0.0] and (video.width, video.height) == (298, 224)


# --- 4. truncated files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def truncated(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("truncated")
    noisy = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25,noise=alls=30:allf=t", "-t", "10"]
    whole = {
        "faststart.mp4": make(root / "faststart.mp4", *noisy, "-c:v", "libx264", "-g", "25", "-movflags", "+faststart"),
        "download.mkv": make(root / "download.mkv", *noisy, "-c:v", "libx264", "-g", "25"),
    }
    cut = {}
    for name, path in whole.items():
        data = path.read_bytes()
        cut[name] = root / f"cut_{name}"
        cut[name].write_bytes(data[: int(len(data) * 0.3)])
    return {"whole_" + k: v for k, v in whole.items()} | cut


@pytest.mark.parametrize("name", ["faststart.mp4", "download.mkv"])
def test_truncated_file_is_a_failure_unless_partial_is_allowed(truncated, name):
    whole = extract_video(str(truncated["whole_" + name]), ExtractionSettings())
    assert whole.num_candidates == 10 and not whole.partial and whole.decoded_s == pytest.approx(10, abs=0.05)
    with pytest.raises(VideoDecodeError, match=r"truncated: frames end at \d\.\d\d s of the 10\.00 s") as caught:
        extract_video(str(truncated[name]), ExtractionSettings())
    assert "--allow-partial" in caught.value.reason
    kept = extract_video(str(truncated[name]), ExtractionSettings(allow_partial=True))
    assert kept.partial and kept.warnings[0].startswith("truncated")
    assert 1 <= kept.num_candidates <= 4 and kept.decoded_s < 4


def test_build_records_truncation_and_flags_kept_partial_files(truncated, tmp_path):
    from pipeline.annotations import load_annotations
    from pipeline.build import BuildOptions, build_shards
    from shards.reader import iter_samples, shard_urls
    from shards.sample_format import sample_metadata
    from shards.storage import Store

    annotations = tmp_path / "a.jsonl"
    annotations.write_text(
        "\n".join(json.dumps({"video": f, "caption": "noise"}) for f in ("faststart.mp4", "cut_faststart.mp4")), encoding="utf-8"
    )
    videos = truncated["faststart.mp4"].parent
    options = BuildOptions(workers=1, show_progress=False)
    strict = build_shards(load_annotations(str(annotations)), str(videos), Store(str(tmp_path / "strict")), ExtractionSettings(), options)
    assert strict.samples_written == 1 and strict.failures == 1
    failures = [json.loads(line) for line in (tmp_path / "strict" / "failures.jsonl").read_text().splitlines()]
    assert failures[0]["key"] == "cut_faststart" and "truncated" in failures[0]["error"]
    lenient = build_shards(
        load_annotations(str(annotations)), str(videos), Store(str(tmp_path / "lenient")), ExtractionSettings(allow_partial=True), options
    )
    assert lenient.samples_written == 2
    metadata = {m["key"]: m for m in (sample_metadata(s) for s in iter_samples(shard_urls(str(tmp_path / "lenient"))))}
    assert metadata["cut_faststart"]["partial"] is True and "partial" not in metadata["faststart"]
    assert metadata["cut_faststart"]["source"]["decoded_s"] < 4 <= metadata["faststart"]["source"]["decoded_s"]


# --- 5. memory and imports ------------------------------------------------------------------

PEAK_RSS = textwrap.dedent(
    """
    import resource, sys
    from pipeline.extract import ExtractionSettings, extract_video
    video = extract_video(sys.argv[1], ExtractionSettings())
    assert len(video.frames_jpeg) == 12, len(video.frames_jpeg)
    print(video.num_candidates, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """
)


def peak_rss_mb(path: Path) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, str(path)], capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def test_peak_memory_does_not_grow_with_duration(tmp_path):
    """30 minutes at 2 fps decodes to 1,800 candidates of 298x224 (360 MB if all were held)."""
    tiny = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    short = make(tmp_path / "short.mp4", *lavfi_source("64x48", 60, rate=2), *tiny)
    long_ = make(tmp_path / "long.mp4", *lavfi_source("64x48", 1800, rate=2), *tiny)
    short_count, short_mb = peak_rss_mb(short)
    long_count, long_mb = peak_rss_mb(long_)
    assert (short_count, long_count) == (60, 1800)
    assert long_mb - short_mb < 40, (short_mb, long_mb)


def test_build_worker_does_not_import_torch():
    probe = "import sys, pipeline.decode_worker; print(sorted(m for m in ('torch', 'webdataset') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    import pipeline.build
    from pipeline.decode_worker import decode_one

    assert pipeline.build.decode_one is decode_one  # what the spawned pool runs


def test_unknown_duration_decodes_twice_and_keeps_the_exact_linspace(tmp_path):
    """A raw H.264 stream has no duration in its header: the chooser cannot predict the count,
    so the count from the first pass drives an exact second pass."""
    mp4 = make(tmp_path / "clip.mp4", *lavfi_source("160x120", 30), "-c:v", "libx264", "-pix_fmt", "yuv420p")
    raw = make(tmp_path / "clip.h264", "-i", str(mp4), "-c", "copy", "-f", "h264")
    from_mp4 = extract_video(str(mp4), ExtractionSettings())
    from_raw = extract_video(str(raw), ExtractionSettings())
    assert from_raw.source.duration_s is None
    assert from_raw.num_candidates == from_mp4.num_candidates == 30
    assert from_raw.sampled_at_s == from_mp4.sampled_at_s == [float(i) for i in np.linspace(0, 29, 12).astype(int)]


# --- 6. files found by id -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "encode"),
    [
        ("camcorder.mts", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mpegts"]),
        ("web.ogv", ["-c:v", "libtheora"]),
        ("dvd.vob", ["-c:v", "mpeg2video", "-f", "vob"]),
        ("broadcast.mxf", ["-c:v", "mpeg2video", "-pix_fmt", "yuv422p", "-b:v", "5M"]),
        ("phone.3gp", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-s", "176x144"]),
    ],
)
def test_other_containers_are_found_by_id_and_decode(tmp_path, name, encode):
    from pipeline.records import VideoRecord
    from pipeline.video_index import VideoIndex

    videos = tmp_path / "videos"
    videos.mkdir()
    make(videos / name, *lavfi_source("320x240", 3), *encode)
    video_id = name.rsplit(".", 1)[0]
    record = VideoIndex(str(videos)).resolve(VideoRecord(video_id, video_id, ["c"]))
    assert record.path is not None and record.path.endswith(name)
    assert extract_video(record.path, ExtractionSettings()).num_candidates == 3


def test_ids_with_dots_decomposed_names_and_ambiguous_ids(tmp_path):
    from pipeline.annotations import VideoRecord, load_annotations
    from pipeline.video_index import VideoIndex

    videos = tmp_path / "videos"
    for folder in ("a", "b", "mac"):
        (videos / folder).mkdir(parents=True)
    (videos / "a" / "party.2019.mp4").write_bytes(b"x")
    (videos / "a" / "twice.mp4").write_bytes(b"x")
    (videos / "b" / "twice.mp4").write_bytes(b"x")
    composed = "caf\u00e9"
    (videos / "mac" / (unicodedata.normalize("NFD", composed) + ".mov")).write_bytes(b"x")
    index = VideoIndex(str(videos))

    def resolve(reference: str) -> VideoRecord:
        return index.resolve(VideoRecord(reference, reference, ["c"]))

    assert resolve("party.2019").path.endswith("party.2019.mp4")
    assert resolve(composed).path is not None  # NFC id, NFD file name
    assert resolve(f"mac/{composed}.mov").path is not None
    assert resolve("party.2019.mp4").path.endswith("a/party.2019.mp4")  # a file name anywhere below
    twice = resolve("twice")
    assert twice.path is None and not twice.missing
    assert "matches 2 files" in twice.problem and "a/twice.mp4" in twice.problem and "b/twice.mp4" in twice.problem
    assert resolve("a/twice.mp4").path.endswith("a/twice.mp4")  # naming the file settles it
    absent = resolve("party.2020")
    assert absent.path is None and absent.missing

    csv = tmp_path / "list.csv"
    csv.write_text("video,caption\nparty.2019,people dance\nclip.mp4,a clip\n", encoding="utf-8")
    assert [r.video_id for r in load_annotations(str(csv))] == ["party.2019", "clip"]


def test_ambiguous_id_is_a_recorded_failure_even_with_ignore_missing(tmp_path, time_coded_videos):
    from pipeline.annotations import VideoRecord
    from pipeline.build import BuildOptions, build_shards
    from shards.storage import Store

    videos = tmp_path / "videos"
    for folder in ("a", "b"):
        (videos / folder).mkdir(parents=True)
        (videos / folder / "twice.mp4").write_bytes(time_coded_videos["landscape"].read_bytes())
    records = [VideoRecord("twice", "twice", ["c"]), VideoRecord("gone", "gone", ["c"]), VideoRecord("a", "a/twice.mp4", ["c"])]
    report = build_shards(records, str(videos), Store(str(tmp_path / "out")), ExtractionSettings(), BuildOptions(ignore_missing=True))
    assert report.samples_written == 1 and report.failures == 1
    failure = json.loads((tmp_path / "out" / "failures.jsonl").read_text().splitlines()[0])
    assert failure["key"] == "twice" and "matches 2 files" in failure["error"]


# --- 7. captions ----------------------------------------------------------------------------


def test_captions_keep_joiners_and_lose_invisible_noise():
    from pipeline.annotations import clean_captions

    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one emoji built with zero-width joiners
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "mi-khaham": ZWNJ inside the word
    hindi = "\u0915\u094d\u200d\u0937"  # a half-form requested with ZWJ
    england = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"  # tag characters
    noisy = "\ufeff\u202ea man\u00ad cooks\u200b pasta\u2066!\u2069\u200e"
    assert clean_captions([family, persian, hindi, england, noisy]) == [family, persian, hindi, england, "a man cooks pasta!"]


# --- 8. timing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fps", "count", "expected_frames"), [("25", 88, [0, 25, 50, 75]), ("30000/1001", 100, [0, 29, 59, 89])])
def test_kept_frame_is_the_one_on_screen_at_each_second(tmp_path, fps, count, expected_frames):
    """At 25 fps a frame starts exactly on each second; at 29.97 the frame on screen at second
    k started just before it (frame 29 at 0.968 s). ffmpeg's default rounding kept frames
    4, 29, 54 (0.16 s late) at 25 fps."""
    video = extract_video(str(write_frame_coded_video(tmp_path / "coded.mkv", fps, count)), ExtractionSettings())
    assert [frame_index(j) for j in video.frames_jpeg] == expected_frames
    rate = 25 if fps == "25" else 30000 / 1001
    assert video.timestamps_s == pytest.approx([i / rate for i in expected_frames], abs=1e-3)  # mkv stores milliseconds
    assert video.sampled_at_s == [0.0, 1.0, 2.0, 3.0]


def _grey_seconds(frames_jpeg: list[bytes]) -> list[int]:
    """The second each frame shows, from write_time_coded_video's grey levels (20 per second + 10)."""
    return [round((float(np.asarray(Image.open(io.BytesIO(jpeg))).mean()) - 10) / 20) for jpeg in frames_jpeg]


def _time_coded_part(path: Path, width: int, height: int, first_second: int, seconds: int) -> Path:
    count = seconds * 24
    levels = np.minimum((np.arange(count) // 24 + first_second) * 20 + 10, 250).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()
    command = [ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-r", "24", "-i", "pipe:", "-c:v", "libx264", "-qp", "0", str(path)]  # fmt: skip
    subprocess.run(command, input=frames.tobytes(), check=True)
    return path


def test_mpeg_ts_that_switches_resolution_mid_stream_keeps_one_frame_per_second(tmp_path):
    """640x360 for 3 s, then 320x180 (a broadcast TS, or segments joined with cat): 6 frames, one
    per second, none repeated (a rebuilt filter graph restarted fps at 0 and gave 9)."""
    parts = []
    for name, size, first, offset in (("a", (640, 360), 0, "0"), ("b", (320, 180), 3, "3")):
        mp4 = _time_coded_part(tmp_path / f"{name}.mp4", *size, first, 3)
        ts = make(tmp_path / f"{name}.ts", "-i", str(mp4), "-c", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "mpegts", "-output_ts_offset", offset)
        parts.append(ts.read_bytes())
    joined = tmp_path / "switch.ts"
    joined.write_bytes(b"".join(parts))
    video = extract_video(str(joined), ExtractionSettings())
    assert _grey_seconds(video.frames_jpeg) == [0, 1, 2, 3, 4, 5]
    assert video.timestamps_s == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert {jpeg_size(j)[1] for j in video.frames_jpeg} == {224}  # both halves at the short side


def test_video_that_starts_after_the_audio_samples_its_own_seconds(tmp_path):
    """The video stream begins 1.5 s into the container (audio from 0): frames are taken at the
    video's own seconds 0..4 (source times 1.5..5.5), not at container seconds 0 and 1, which
    both showed its first frame."""
    video_only = _time_coded_part(tmp_path / "v.mp4", 320, 240, 0, 5)
    late = make(tmp_path / "late.mp4", "-f", "lavfi", "-i", "sine=frequency=440:duration=6.5", "-itsoffset", "1.5", "-i", str(video_only),
                "-map", "0:a", "-map", "1:v", "-c:v", "copy", "-c:a", "aac")  # fmt: skip
    video = extract_video(str(late), ExtractionSettings())
    assert _grey_seconds(video.frames_jpeg) == [0, 1, 2, 3, 4]
    assert video.timestamps_s == [1.5, 2.5, 3.5, 4.5, 5.5] and video.sampled_at_s == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert not video.partial
