"""What a build says (issue 33): annotated videos it left out or could not find, and a rebuild with
nothing left to do, without an empty progress bar."""

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
    assert _build(annotations, videos, tmp_path / "a", "--no-progress") == 0
    err = capsys.readouterr().err
    assert "warning: 4 of the 5 videos annotated" in err and "--ignore-missing" in err and "--retry-failures" in err
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
