"""What a build says (issues 33, 41): annotated videos it left out or could not find, a rebuild with
nothing left to do without an empty progress bar, its failures by reason, and an exit status a script
can stop on when nothing, or too much, failed."""

from __future__ import annotations

import shutil

import pytest

from pipeline.__main__ import main as pipeline_main
from tests.conftest import write_time_coded_video


@pytest.fixture
def partial_download(tmp_path):
    """Annotations of five videos of which one was downloaded."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write_time_coded_video(videos / "v0.mp4", 64, 48, 2.0)
    annotations = tmp_path / "list.csv"
    annotations.write_text("video,caption\n" + "".join(f"v{i},clip {i}\n" for i in range(5)))
    return annotations, videos


def _build(annotations, videos, out, *extra: str) -> int:
    return pipeline_main(["build", "--annotations", str(annotations), "--videos", str(videos), "--out", str(out), "--short-side", "32",
                          "--workers", "1", *extra])  # fmt: skip


def test_mostly_missing_files_are_named_with_the_flag_and_ignoring_them_is_counted(partial_download, tmp_path, capsys):
    annotations, videos = partial_download
    assert _build(annotations, videos, tmp_path / "a", "--no-progress") == 1  # 4 of 5 failed: past --max-failure-fraction's 0.5
    err = capsys.readouterr().err
    assert "warning: 4 of the 5 videos annotated" in err and "--ignore-missing" in err and "--retry-failures" in err
    assert "error: 4 of 5 videos failed (80%), more than --max-failure-fraction 0.5" in err
    assert _build(annotations, videos, tmp_path / "b", "--no-progress", "--ignore-missing") == 0
    captured = capsys.readouterr()
    assert "--ignore-missing: 4 annotated videos not found, left out" in captured.out and "warning" not in captured.err


def test_a_few_missing_files_do_not_warn(partial_download, tmp_path, capsys):
    annotations, videos = partial_download
    for i in range(1, 4):
        shutil.copy(videos / "v0.mp4", videos / f"v{i}.mp4")
    assert _build(annotations, videos, tmp_path / "a", "--no-progress") == 0
    assert "warning" not in capsys.readouterr().err


def test_a_rebuild_with_nothing_to_do_says_so_without_a_progress_bar(partial_download, tmp_path, capsys):
    annotations, videos = partial_download
    assert _build(annotations, videos, tmp_path / "a", "--ignore-missing") == 0
    capsys.readouterr()
    assert _build(annotations, videos, tmp_path / "a", "--ignore-missing") == 0  # progress bar allowed
    captured = capsys.readouterr()
    assert "nothing to build: 1 samples already in 1 shards" in captured.out
    assert "video/s" not in captured.err and "0/0" not in captured.err and "samples written" not in captured.out


def test_failures_are_summed_up_by_reason_with_their_first_ids(partial_download, tmp_path, capsys):
    """video2dataset-style: each reason with its count, its first ids and one example, most frequent first,
    and where the whole list is; not only in the demo."""
    annotations, videos = partial_download
    (videos / "v1.mp4").write_bytes(b"not a video" * 50)
    shutil.copy(videos / "v0.mp4", videos / "v2.mp4")
    assert _build(annotations, videos, tmp_path / "a", "--no-progress", "--max-failure-fraction", "0.75") == 0  # 3 of 5 failed: 60%
    err = capsys.readouterr().err
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("3 video(s) failed, by reason"))
    assert str(tmp_path / "a" / "failures.jsonl") in lines[start]
    assert lines[start + 1].startswith("  missing: 2 (v3, v4), e.g. no video file named 'v3' (with any extension) under")
    assert lines[start + 2].startswith("  decode: 1 (v1), e.g. ffmpeg exited with code")


def test_a_build_that_failed_too_much_or_built_nothing_exits_non_zero(partial_download, tmp_path, capsys):
    annotations, videos = partial_download
    assert _build(annotations, videos, tmp_path / "a", "--no-progress", "--max-failure-fraction", "0.9") == 0  # 80% is allowed here
    (videos / "v0.mp4").unlink()
    assert _build(annotations, videos, tmp_path / "b", "--no-progress", "--max-failure-fraction", "1") == 1  # nothing built: always
    err = capsys.readouterr().err
    assert "error: nothing was built: all 5 video(s) failed" in err
    with pytest.raises(SystemExit):
        _build(annotations, videos, tmp_path / "c", "--max-failure-fraction", "1.5")
    assert "not a fraction from 0 to 1" in capsys.readouterr().err
