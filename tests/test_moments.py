"""Moments in long videos (README: Finding moments in long videos): ``pipeline build --windows``, search
grouped by source video with each hit's time range, in the command line, the JSON API and the page
(with the source video served by range requests)."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from pipeline.records import VideoRecord
from pipeline.windows import Windows, window_records
from search.cli import main as search_main
from search.searcher import open_searcher
from shards.reader import iter_samples, shard_urls
from shards.sample_format import frame_members, sample_metadata
from tests.conftest import MOMENT_SCENES
from tests.service_process import Service


def test_windows_cover_a_video_with_the_last_running_to_its_end():
    windows = Windows.parse("10:5")
    spans = windows.spans(180.0)
    assert spans[:2] == [(0.0, 10.0), (5.0, 15.0)] and spans[-1] == (170.0, None) and len(spans) == 35
    assert windows.spans(182.0)[-1] == (175.0, None) and windows.spans(182.0)[-2] == (170.0, 180.0)
    assert windows.spans(10.0) == [] and windows.spans(None) == []  # one window's length or unknown: the whole video, one sample
    assert Windows.parse("2.5:2.5").spans(6.0) == [(0.0, 2.5), (2.5, 5.0), (5.0, None)]
    for bad in ("10", "10:0", "5:10", "a:b", "10:5:1", "-10:5"):
        with pytest.raises(ValueError, match="--windows"):
            Windows.parse(bad)


def test_window_records_keep_annotated_segments_and_mark_every_window():
    whole = VideoRecord("talk", "talk.mp4", ["a talk"], "test", "/v/talk.mp4")
    segment = VideoRecord("talk_0-4", "talk.mp4", ["intro"], "test", "/v/talk.mp4", start_s=0.0, end_s=4.0)
    short = VideoRecord("clip", "clip.mp4", [], None, "/v/clip.mp4")
    cut = window_records([whole, segment, short], Windows(10.0, 10.0), {"/v/talk.mp4": 25.0, "/v/clip.mp4": 3.0})
    assert [(r.video_id, r.span) for r in cut] == [("talk_0-10", (0.0, 10.0)), ("talk_10-20", (10.0, 20.0)), ("talk_20-end", (20.0, None)),
                                                  ("talk_0-4", (0.0, 4.0)), ("clip", None)]  # fmt: skip
    assert all(r.captions == ["a talk"] and r.extra["source_video"] == "talk" for r in cut[:3])
    assert cut[2].extra["window"] == {"length_s": 10.0, "stride_s": 10.0, "index": 2, "of": 3}
    assert "window" not in cut[3].extra and cut[4].extra["window"]["of"] == 1


def test_an_unannotated_folder_is_cut_into_window_samples(moments_collection, capsys):
    from pipeline.__main__ import main as pipeline_main

    root, _ = moments_collection
    samples = list(iter_samples(shard_urls(str(root / "windows"))))
    by_key = {s["__key__"]: s for s in samples}
    assert len(samples) == 35 + 1 and "short" in by_key and "long_60-70" in by_key and "long_170-end" in by_key
    metadata = sample_metadata(by_key["long_60-70"])
    assert metadata["segment"] == {"start_s": 60.0, "end_s": 70.0} and metadata["source_video"] == "long" and metadata["captions"] == []
    assert all(60.0 <= t < 70.0 for t in metadata["frames"]["timestamps_s"]) and len(frame_members(by_key["long_60-70"])) == 10
    assert "segment" not in sample_metadata(by_key["short"])  # shorter than one window: the whole clip
    durations = json.loads((root / "windows" / "windows.json").read_text())["durations"]
    assert sorted(round(d) for d in durations.values()) == [8, 180]
    assert pipeline_main(["build", "--videos", str(root / "videos"), "--out", str(root / "windows"), "--windows", "10:5", "--short-side", "112",
                          "--samples-per-shard", "16", "--no-progress"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "nothing to build: 36 samples already in 3 shards" in out and "--ignore-missing" not in out  # windows are not dropped videos
    assert pipeline_main(["build", "--videos", str(root / "videos"), "--out", str(root / "other")]) == 2  # no annotations, no windows
    assert "--annotations is required" in capsys.readouterr().err


def test_a_query_naming_a_scene_finds_the_long_video_inside_that_scene(moments_collection):
    from tools.make_sample_data import ClipSpec

    root, bounds = moments_collection
    searcher = open_searcher(str(root / "index"))
    assert searcher.grouped and searcher.index.manifest["segment_rows"] == 35
    for (colour, shape, direction), (start, end) in zip(MOMENT_SCENES, bounds, strict=True):
        query = ClipSpec("q", colour, shape, direction, 1, 1, 1.0).captions()[0]
        result = searcher.search(query, 5)
        top = result.hits[0]
        segment = top.record["segment"]
        assert top.record["source_file"] == "long.mp4", (query, top.record)
        assert start <= segment["start_s"] and (segment["end_s"] or 180.0) <= end, (query, segment)
        assert [h.record["key"] for h in result.hits] == ["long_" + top.record["key"].split("_", 1)[1], "short"]  # one hit per video
        assert 1 <= len(top.moments) <= 5 and all(m.record["source_file"] == "long.mp4" for m in top.moments)
        assert all(m.score <= top.score for m in top.moments)
    like = searcher.search_like("short", 2)  # a meanP index has no fine stage: its note does not speak of one (issue 41)
    assert "coarse video vectors" in like.note and "fine similarity" not in like.note
    ungrouped = open_searcher(str(root / "index"), group=False).search("a blue square moves from bottom to top", 5)
    assert [h.record["source_file"] for h in ungrouped.hits].count("long.mp4") >= 4  # without grouping, windows crowd the list


def test_the_command_line_shows_each_moments_time_range(moments_collection, capsys):
    root, bounds = moments_collection
    assert search_main(["--index", str(root / "index"), "a blue square moves from bottom to top", "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert " s of long.mp4" in lines[1] and any("also long_" in line for line in lines[2:])
    assert search_main(["--index", str(root / "index"), "a blue square moves from bottom to top", "-k", "2", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)["hits"][0]
    assert bounds[1][0] <= hit["start_s"] < hit["end_s"] <= bounds[1][1] and hit["moments"][0]["start_s"] is not None


def test_the_service_answers_moments_and_plays_the_source_from_its_second(moments_collection):
    root, bounds = moments_collection
    service = Service(root / "index", "--videos", str(root / "videos"))
    try:
        status, answer = service.json("/api/search?q=" + urllib.parse.quote("a blue square moves from bottom to top") + "&k=3")
        hit = answer["hits"][0]
        assert status == 200 and bounds[1][0] <= hit["start_s"] and hit["end_s"] <= bounds[1][1]
        assert hit["play"] == f"/source/{hit['key']}#t={hit['start_s']:g},{hit['end_s']:g}" and len(hit["moments"]) >= 1
        assert [h["key"] for h in answer["hits"]][1:] == ["short"] and "play" in answer["hits"][1]
        size = (root / "videos" / "long.mp4").stat().st_size
        status, headers, body = service.request("GET", f"/source/{hit['key']}", {"Range": "bytes=100-1099"})
        assert status == 206 and len(body) == 1000 and headers["content-range"] == f"bytes 100-1099/{size}"
        assert body == (root / "videos" / "long.mp4").read_bytes()[100:1100] and headers["content-type"] == "video/mp4"
        status, _, page = service.request("GET", "/?q=a+blue+square+moves+from+bottom+to+top&k=3")
        text = page.decode()
        assert status == 200 and "moment: " in text and " s of long.mp4" in text and "<video class='moment'" in text
        assert "more moment(s) of this video" in text
        assert "2 videos found among 36 indexed windows and clips" in text  # not "2 of 36 videos" (issue 41)
    finally:
        service.stop()
    service = Service(root / "index")  # no --videos: nothing to play, and the route says why
    try:
        status, answer = service.json("/api/search?q=a+red+circle&k=1")
        assert status == 200 and "play" not in answer["hits"][0]
        status, _, body = service.request("GET", f"/source/{answer['hits'][0]['key']}")
        assert status == 404 and b"not started with --videos" in body
    finally:
        service.stop()
