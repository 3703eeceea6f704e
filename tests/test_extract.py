"""Real ffmpeg on generated and real videos: counts, timestamps, sizes and pixels."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.extract import ExtractionSettings, VideoDecodeError, extract_video, parse_source_info
from pipeline.sampling import SlicePosition


def decoded(video):
    return [np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float64) for jpeg in video.frames_jpeg]


def second_shown(frame: np.ndarray) -> int:
    """Inverse of conftest.write_time_coded_video's grey level."""
    return int(round((frame.mean() - 10) / 20))


def test_landscape_short_clip_keeps_one_frame_per_second(time_coded_videos):
    video = extract_video(str(time_coded_videos["landscape"]), ExtractionSettings())
    assert video.num_candidates == 5
    assert video.timestamps_s == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert (video.width, video.height) == (298, 224)
    assert [second_shown(f) for f in decoded(video)] == [0, 1, 2, 3, 4]
    assert video.source.width == 320 and video.source.height == 240
    assert video.source.duration_s == pytest.approx(5.0, abs=0.1)
    assert video.source.fps == pytest.approx(24.0)


@pytest.mark.parametrize(("name", "source_size"), [("portrait", (240, 320)), ("wide", (426, 240))])
def test_short_side_is_224_and_aspect_ratio_kept(time_coded_videos, name, source_size):
    video = extract_video(str(time_coded_videos[name]), ExtractionSettings())
    sw, sh = source_size
    short, long_ = sorted((video.width, video.height))
    assert short == 224
    exact_long = max(sw, sh) * 224 / min(sw, sh)
    assert abs(long_ - exact_long) <= 2 and long_ % 2 == 0
    assert (video.width < video.height) == (sw < sh)  # portrait stays portrait
    for jpeg in video.frames_jpeg:
        assert Image.open(io.BytesIO(jpeg)).size == (video.width, video.height)


def test_long_clip_uniform_selection_picks_right_seconds(time_coded_videos):
    video = extract_video(str(time_coded_videos["long"]), ExtractionSettings())
    expected = np.linspace(0, 29, 12).astype(int).tolist()
    assert video.num_candidates == 30
    assert video.timestamps_s == [float(s) for s in expected]
    # grey level saturates at 250 after second 12, so compare the seconds it can encode
    shown = [second_shown(f) for f in decoded(video)]
    assert [s for s, e in zip(shown, expected) if e <= 12] == [e for e in expected if e <= 12]


def test_head_and_tail_selection(time_coded_videos):
    head = extract_video(str(time_coded_videos["long"]), ExtractionSettings(slice_position=SlicePosition.HEAD))
    tail = extract_video(str(time_coded_videos["long"]), ExtractionSettings(slice_position=SlicePosition.TAIL))
    assert head.timestamps_s == [float(s) for s in range(12)]
    assert tail.timestamps_s == [float(s) for s in range(18, 30)]
    assert [second_shown(f) for f in decoded(head)] == list(range(12))


def test_options_change_rate_size_and_cap(time_coded_videos):
    path = str(time_coded_videos["landscape"])
    dense = extract_video(path, ExtractionSettings(sample_fps=3.0, max_frames=100))
    assert dense.num_candidates == 15
    assert dense.timestamps_s[:4] == pytest.approx([0, 1 / 3, 2 / 3, 1.0])
    native = extract_video(path, ExtractionSettings(short_side=0))
    assert (native.width, native.height) == (320, 240)
    small = extract_video(path, ExtractionSettings(short_side=112))
    assert small.height == 112
    capped = extract_video(str(time_coded_videos["long"]), ExtractionSettings(max_seconds=10))
    assert capped.num_candidates == 10


def test_keep_transcode_stores_a_decodable_3fps_mp4(time_coded_videos, tmp_path):
    video = extract_video(str(time_coded_videos["landscape"]), ExtractionSettings(keep_transcode=True))
    assert video.transcode_mp4 is not None
    transcode = tmp_path / "t.mp4"
    transcode.write_bytes(video.transcode_mp4)
    again = extract_video(str(transcode), ExtractionSettings(sample_fps=3.0, max_frames=100))
    assert again.source.fps == pytest.approx(3.0)
    assert (again.source.width, again.source.height) == (298, 224)
    assert again.num_candidates == 15


def test_real_msrvtt_gif_and_mp4(msrvtt_sample):
    gif = extract_video(str(msrvtt_sample / "videos" / "video7131.gif"), ExtractionSettings())
    assert gif.source.codec == "gif"
    assert gif.num_candidates == int(np.ceil(gif.source.duration_s))
    assert len(gif.frames_jpeg) == 12
    assert gif.timestamps_s == [float(i) for i in np.linspace(0, gif.num_candidates - 1, 12).astype(int)]
    assert gif.height == 224
    mp4 = extract_video(str(msrvtt_sample / "videos" / "video9770.mp4"), ExtractionSettings())
    assert (mp4.source.width, mp4.source.height) == (320, 240)
    assert len(mp4.frames_jpeg) == min(12, mp4.num_candidates) and mp4.num_candidates >= 10


def test_broken_inputs_raise_with_the_path(sample_dataset):
    videos = sample_dataset / "videos"
    expectations = {
        "broken_truncated.mp4": "ffmpeg exited",
        "broken_random.mp4": "ffmpeg exited",
        "broken_empty.mp4": "empty",
        "broken_audio_only.mp4": "ffmpeg exited",
        "broken_missing.mp4": "not found",
    }
    for name, reason in expectations.items():
        with pytest.raises(VideoDecodeError, match=reason) as caught:
            extract_video(str(videos / name), ExtractionSettings())
        assert caught.value.path.endswith(name)
    with pytest.raises(VideoDecodeError) as caught:
        extract_video(str(videos / "broken_audio_only.mp4"), ExtractionSettings())
    assert "matches no streams" in caught.value.stderr_tail or "does not contain any stream" in caught.value.stderr_tail


def test_timeout_kills_a_hung_ffmpeg():
    """An endless input stands in for a stalled network mount: the watchdog must end it."""
    from pipeline.extract import _run_ffmpeg
    from pipeline.ffmpeg_binary import ffmpeg_executable

    endless = [
        ffmpeg_executable(),
        "-nostdin",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x64:rate=5",
        "-f",
        "image2pipe",
        "-c:v",
        "ppm",
        "pipe:",
    ]
    with pytest.raises(VideoDecodeError, match="timed out after 0.5 s"):
        _run_ffmpeg(endless, "endless-source", timeout_s=0.5, on_frame=lambda frame: None)


def test_parse_source_info_reads_the_input_section_only():
    banner = (
        "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':\n"
        "  Duration: 00:01:02.50, start: 0.000000, bitrate: 40 kb/s\n"
        "  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), "
        "640x360 [SAR 1:1 DAR 16:9], 37 kb/s, 29.97 fps, 29.97 tbr, 12800 tbn (default)\n"
        "Stream mapping:\n"
        "Output #0, image2pipe, to 'pipe:':\n"
        "  Stream #0:0(und): Video: ppm, rgb24, 398x224, q=2-31, 200 kb/s, 3 fps, 3 tbn (default)\n"
    )
    info = parse_source_info(banner)
    assert info.duration_s == pytest.approx(62.5)
    assert (info.width, info.height, info.codec) == (640, 360, "h264")
    assert info.fps == pytest.approx(29.97)
    assert parse_source_info("garbage").duration_s is None


def test_settings_validation():
    with pytest.raises(ValueError):
        ExtractionSettings(transcode_fps=3, sample_fps=2)
    with pytest.raises(ValueError):
        ExtractionSettings(jpeg_quality=0)
    with pytest.raises(ValueError):
        ExtractionSettings(max_frames=0)
