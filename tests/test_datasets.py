"""Every dataset of the CLIP4Clip family (issue 16): annotation files in each release's exact
layout (read from CLIP4Clip's ``dataloaders/``), generated videos, segments, tables with
chosen columns, videos in S3 and on a web server, per-shard build stats, and the 64-frame /
64-word path through train and eval."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from pipeline.annotations import Columns, detect_format, load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings, extract_video
from shards.reader import iter_samples, shard_urls
from shards.sample_format import frame_members, sample_metadata
from shards.storage import Store
from tests.conftest import write_time_coded_video
from tests.http_files import send_file

QUIET = BuildOptions(workers=1, show_progress=False)


def built(out: Path) -> dict[str, dict]:
    return {m["key"]: m for m in (sample_metadata(s) for s in iter_samples(shard_urls(str(out))))}


def failures(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 6 s time-coded clip (grey level = second shown) copied under many names below."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_time_coded_video(path, 64, 48, 6.0)
    return path


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    write_time_coded_video(path, 64, 48, 40.0, fps=8)
    return path


def place(root: Path, relative: str, source: Path) -> None:
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    (root / relative).write_bytes(source.read_bytes())


# --- LSMDC ----------------------------------------------------------------------------------


def test_lsmdc_tab_separated_files_per_movie_folders_and_repeated_clip_ids(tmp_path, clip):
    ann = tmp_path / "LSMDC16_annos_training.csv"
    first, second = "0001_American_Beauty_00.00.51.926-00.00.54.129", "0002_As_Good_As_It_Gets_00.01.02.000-00.01.05.500"
    ann.write_text(
        f"{first}\t00.00.51.926\t00.00.54.129\t00.00.51.784\t00.00.54.201\tSOMEONE walks in.\n"
        f"{first}\t00.00.51.926\t00.00.54.129\t00.00.51.784\t00.00.54.201\tHe smiles.\n"
        f"{second}\t00.01.02.000\t00.01.05.500\t00.01.01.900\t00.01.05.600\tSOMEONE opens the door.\n",
        encoding="utf-8",
    )
    videos = tmp_path / "videos"
    place(videos, f"0001_American_Beauty/{first}.avi", clip)
    place(videos, f"0002_As_Good_As_It_Gets/{second}.avi", clip)
    assert detect_format(str(ann)) == "lsmdc"
    records = load_annotations(str(ann))
    assert [(r.video_id, r.captions, r.split) for r in records] == [
        (first, ["SOMEONE walks in.", "He smiles."], "train"),
        (second, ["SOMEONE opens the door."], "train"),
    ]
    test_file = tmp_path / "LSMDC16_challenge_1000_publictect.csv"
    test_file.write_text(f"{second}\t00.01.02.000\t00.01.05.500\t00.01.01.900\t00.01.05.600\tSOMEONE opens the door.\n")
    assert load_annotations(str(test_file))[0].split == "test"
    report = build_shards(records, str(videos), Store(str(tmp_path / "out")), ExtractionSettings(short_side=32), QUIET)
    assert report.samples_written == 2 and report.failures == 0
    (bad := tmp_path / "LSMDC16_annos_val.csv").write_text("only\tthree\tfields\n")
    with pytest.raises(ValueError, match=r"LSMDC16_annos_val.csv:1: expected 6 tab-separated fields"):
        load_annotations(str(bad), fmt="lsmdc")


# --- ActivityNet Captions (paragraph-to-video) ----------------------------------------------


def test_activitynet_paragraphs_whole_videos_and_both_file_namings(tmp_path, clip):
    data = {
        "v_abc": {"duration": 6.0, "timestamps": [[0.0, 2.5], [2.5, 6.0]], "sentences": ["A man opens a box.", " He takes out a cake. "]},
        "v_xyz": {"duration": 6.0, "timestamps": [[0.0, 6.0]], "sentences": ["Two dogs run."]},
        "v_not_in_split": {"duration": 6.0, "timestamps": [[0, 1]], "sentences": ["x"]},
    }
    (ann := tmp_path / "val_1.json").write_text(json.dumps(data))
    (ids := tmp_path / "val_ids.json").write_text(json.dumps(["v_abc", "v_xyz"]))
    videos = tmp_path / "videos"
    place(videos, "abc.mp4", clip)  # CLIP4Clip's naming: the id without "v_"
    place(videos, "v_xyz.mp4", clip)  # the other distributions keep it
    assert detect_format(str(ann)) == "activitynet"
    records = load_annotations(str(ann), split_file=str(ids))
    assert [r.video_id for r in records] == ["v_abc", "v_xyz"] and {r.split for r in records} == {"test"}
    assert records[0].captions == ["A man opens a box. He takes out a cake."]  # one query, the json's order
    build_shards(records, str(videos), Store(str(tmp_path / "out")), ExtractionSettings(short_side=32, max_frames=64), QUIET)
    samples = built(tmp_path / "out")
    assert set(samples) == {"v_abc", "v_xyz"}
    assert samples["v_abc"]["frames"]["count"] == 6  # the whole video
    assert samples["v_abc"]["sentences"] == [
        {"text": "A man opens a box.", "start_s": 0.0, "end_s": 2.5},
        {"text": "He takes out a cake.", "start_s": 2.5, "end_s": 6.0},
    ]


# --- DiDeMo (paragraph-to-video, seconds 0-31) ---------------------------------------------


def test_didemo_joins_descriptions_in_json_order_and_keeps_seconds_0_to_31(tmp_path, long_clip):
    name = "10015567@N08_3655084291_d8b58466fa.mov"
    data = [
        {"video": name, "description": "the dog jumps", "times": [[3, 3], [3, 4]]},  # later in time, first in the json
        {"video": name, "description": "a dog sits", "times": [[0, 0], [0, 1]]},
        {"video": "other.mov", "description": "not in the split", "times": [[0, 0]]},
    ]
    (ann := tmp_path / "test_data.json").write_text(json.dumps(data))
    (ids := tmp_path / "test_list.txt").write_text(f"{name}\n")
    videos = tmp_path / "videos"
    place(videos, f"{name}.mp4", long_clip)  # downloaded as .mp4 next to its DiDeMo name
    assert detect_format(str(ann)) == "didemo"
    (record,) = load_annotations(str(ann), split_file=str(ids))
    assert record.captions == ["the dog jumps a dog sits"]  # CLIP4Clip joins in the json's order, not by time
    assert (record.start_s, record.end_s, record.split) == (0.0, 31.0, "test")
    assert record.extra["sentences"][0] == {"text": "the dog jumps", "start_s": 15.0, "end_s": 22.5}
    build_shards([record], str(videos), Store(str(tmp_path / "out")), ExtractionSettings(short_side=32, max_frames=64), QUIET)
    (sample,) = built(tmp_path / "out").values()
    assert sample["frames"]["count"] == 31 and sample["frames"]["sampled_at_s"][-1] == 30.0  # of a 40 s video
    assert sample["segment"] == {"start_s": 0.0, "end_s": 31.0}


# --- VATEX ----------------------------------------------------------------------------------


def test_vatex_clips_by_id_or_cut_from_the_youtube_video(tmp_path, clip, long_clip):
    data = [
        {"videoID": "Ptf_2VRj-V0_000122_000132", "enCap": [f"caption {i}" for i in range(10)], "chCap": ["中文"]},
        {"videoID": "youtube_ab_000012_000015", "enCap": ["a cut clip"]},
    ]
    (ann := tmp_path / "vatex_validation_v1.0.json").write_text(json.dumps(data))
    videos = tmp_path / "videos"
    place(videos, "Ptf_2VRj-V0_000122_000132.mp4", clip)  # the clip itself
    place(videos, "youtube_ab.mp4", long_clip)  # only the whole YouTube video
    assert detect_format(str(ann)) == "vatex"
    records = load_annotations(str(ann))
    assert len(records[0].captions) == 10 and records[0].split == "val"
    build_shards(records, str(videos), Store(str(tmp_path / "out")), ExtractionSettings(short_side=32), QUIET)
    samples = built(tmp_path / "out")
    assert samples["Ptf_2VRj-V0_000122_000132"]["frames"]["count"] == 6
    cut = samples["youtube_ab_000012_000015"]
    assert cut["segment"] == {"start_s": 12.0, "end_s": 15.0} and cut["source"]["file"] == "youtube_ab.mp4"
    assert cut["frames"]["sampled_at_s"] == [12.0, 13.0, 14.0]


# --- segments, tables, columns ---------------------------------------------------------------


def test_segments_decode_only_their_span_with_source_timestamps(long_clip):
    settings = ExtractionSettings(short_side=32)
    whole = extract_video(str(long_clip), settings)
    late = extract_video(str(long_clip), settings, span=(30.0, 34.0))
    assert late.sampled_at_s == [30.0, 31.0, 32.0, 33.0] and late.timestamps_s == [30.0, 31.0, 32.0, 33.0]
    assert late.decoded_frames == 4 * 8  # 4 s at 8 fps: seeked, not decoded from the start
    assert whole.decoded_frames == 40 * 8
    from tests.test_extract import decoded, second_shown

    assert [second_shown(f) for f in decoded(late)][:1] == [12]  # grey saturates past 12 s; the frame is later than 12


def test_tables_with_segments_and_chosen_columns_give_one_sample_per_segment(tmp_path, long_clip):
    import pyarrow
    import pyarrow.parquet

    videos = tmp_path / "videos"
    place(videos, "talk.mp4", long_clip)
    (tsv := tmp_path / "list.tsv").write_text("clip\ttext\tfrom\tto\ntalk\tintro\t0\t3\ntalk\tmain part\t10\t14\ntalk\tmore intro\t0\t3\n")
    columns = Columns(video="clip", caption="text", start="from", end="to")
    records = load_annotations(str(tsv), columns=columns)
    assert [(r.video_id, r.captions, r.span) for r in records] == [
        ("talk_0-3", ["intro", "more intro"], (0.0, 3.0)),
        ("talk_10-14", ["main part"], (10.0, 14.0)),
    ]
    table = pyarrow.table({"clip": ["talk", "talk"], "text": [["a", "b"], ["c"]], "from": [0.0, 10.0], "to": [3.0, 14.0]})
    pyarrow.parquet.write_table(table, tmp_path / "list.parquet")
    from_parquet = load_annotations(str(tmp_path / "list.parquet"), columns=columns)
    assert [(r.video_id, r.captions) for r in from_parquet] == [("talk_0-3", ["a", "b"]), ("talk_10-14", ["c"])]
    build_shards(records, str(videos), Store(str(tmp_path / "out")), ExtractionSettings(short_side=32), QUIET)
    samples = built(tmp_path / "out")
    assert samples["talk_10-14"]["frames"]["sampled_at_s"] == [10.0, 11.0, 12.0, 13.0]
    with pytest.raises(ValueError, match="no column 'nope' for the caption"):
        load_annotations(str(tsv), columns=Columns(video="clip", caption="nope"))
    (bad := tmp_path / "bad.csv").write_text("video,caption,start,end\ntalk,x,5,2\n")
    with pytest.raises(ValueError, match="segment end 2 s is not after its start 5 s"):
        load_annotations(str(bad))


# --- remote videos ---------------------------------------------------------------------------


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with Range support (ffmpeg seeks an mp4 by byte ranges); the first request
    for a path under /flaky/ gets a 503, as an overloaded server would answer."""

    flaky_seen: set[str] = set()

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/flaky/") and self.path not in self.flaky_seen:
            self.flaky_seen.add(self.path)
            self.send_error(503, "busy")
            return
        send_file(self, Path(self.directory) / self.path.lstrip("/").removeprefix("flaky/"))


@pytest.fixture
def web_server(tmp_path, clip):
    root = tmp_path / "web"
    place(root, "raw/a.mp4", clip)
    handler = lambda *args, **kwargs: _RangeHandler(*args, directory=str(root), **kwargs)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_videos_from_a_web_server_with_retries_and_recorded_misses(tmp_path, web_server, monkeypatch):
    import pipeline.remote_videos

    monkeypatch.setattr(pipeline.remote_videos, "BACKOFF_S", 0.05)
    (ann := tmp_path / "a.jsonl").write_text(
        "\n".join(
            json.dumps(line)
            for line in (
                {"video": f"{web_server}/raw/a.mp4", "caption": "plain"},
                {"video": f"{web_server}/flaky/raw/a.mp4", "caption": "503 first"},
                {"video": f"{web_server}/raw/gone.mp4", "caption": "404"},
            )
        )
    )
    records = load_annotations(str(ann))
    report = build_shards(records, str(tmp_path), Store(str(tmp_path / "out")), ExtractionSettings(short_side=32), QUIET)
    assert report.samples_written == 2 and report.failures == 1
    (miss,) = failures(tmp_path / "out")
    assert miss["reference"].endswith("/raw/gone.mp4") and "404" in miss["error"]
    samples = built(tmp_path / "out")
    assert all(s["frames"]["count"] == 6 for s in samples.values())
    assert {s["source"]["file"] for s in samples.values()} == {f"{web_server}/raw/a.mp4", f"{web_server}/flaky/raw/a.mp4"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["totals"]["failures"] == {"missing": 1} and manifest["totals"]["samples"] == 2


def test_videos_in_s3_by_id_with_a_missing_object_recorded(tmp_path, s3_bucket, clip):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.put(str(clip), f"{s3_bucket}/raw/movies/a.mp4")
    fs.put(str(clip), f"{s3_bucket}/raw/b.mkv")
    (ann := tmp_path / "a.csv").write_text(f"video,caption\na,one\nb,two\nmissing,three\ns3://{s3_bucket}/raw/nothere.mp4,four\n")
    records = load_annotations(str(ann))
    report = build_shards(records, f"s3://{s3_bucket}/raw/", Store(str(tmp_path / "out")), ExtractionSettings(short_side=32), QUIET)
    assert report.samples_written == 2 and report.failures == 2
    reasons = {f["video_id"]: f["error"] for f in failures(tmp_path / "out")}
    assert "no video file named 'missing'" in reasons["missing"] and "object not found" in reasons["nothere"]
    samples = built(tmp_path / "out")
    assert samples["a"]["source"]["file"] == f"s3://{s3_bucket}/raw/movies/a.mp4" and samples["b"]["frames"]["count"] == 6
    assert "X-Amz-Signature" not in (tmp_path / "out" / "failures.jsonl").read_text()  # no signed URL leaks


# --- build stats ----------------------------------------------------------------------------


def test_manifest_has_per_shard_stats_and_totals(sample_dataset, tmp_path, capsys):
    from pipeline.__main__ import main

    out = tmp_path / "out"
    args = ["build", "--annotations", str(sample_dataset / "annotations.jsonl"), "--videos", str(sample_dataset / "videos")]
    assert main([*args, "--out", str(out), "--samples-per-shard", "4", "--short-side", "32", "--no-progress", "--workers", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    shard = manifest["shards"][0]
    assert set(shard) >= {"samples", "bytes", "failures", "seconds_decoded", "build_seconds", "videos_per_s"}
    totals = manifest["totals"]
    assert totals["samples"] == manifest["num_samples"] == sum(s["samples"] for s in manifest["shards"])
    assert sum(totals["failures"].values()) == manifest["num_failures"] == 5
    assert totals["failures"] == {"decode": 2, "empty": 1, "missing": 1, "no_video_stream": 1}  # the five broken inputs
    assert totals["seconds_decoded"] > 4 * totals["samples"] and totals["videos_per_s"] > 0
    assert "totals: " in capsys.readouterr().out


# --- 64 frames, 64 words, every head ---------------------------------------------------------


@pytest.fixture(scope="module")
def paragraph_shards(tmp_path_factory):
    """Three 70 s clips built with --max-frames 64, captioned with long paragraphs."""
    root = tmp_path_factory.mktemp("paragraphs")
    lines = []
    for i, colour in enumerate(("red", "green", "blue")):
        write_time_coded_video(root / f"v{i}.mp4", 64, 48, 70.0, fps=2)
        paragraph = " ".join(f"the {colour} square moves left then right then stops sentence {k}." for k in range(8))
        lines.append(json.dumps({"video": f"v{i}.mp4", "caption": paragraph}))
    (root / "a.jsonl").write_text("\n".join(lines))
    records = load_annotations(str(root / "a.jsonl"))
    build_shards(records, str(root), Store(str(root / "shards")), ExtractionSettings(short_side=112, max_frames=64), QUIET)
    return root


HEADS = {
    "meanP": ["--sim-header", "meanP"],
    "seqLSTM": ["--sim-header", "seqLSTM"],
    "seqTransf": ["--sim-header", "seqTransf"],
    "tightTransf": ["--sim-header", "tightTransf"],
    "wti": ["--sim-header", "seqTransf", "--interaction", "wti"],
    "emcl": ["--sim-header", "seqTransf", "--emcl"],
}


@pytest.mark.parametrize("head", sorted(HEADS))
def test_64_frames_and_64_words_train_and_evaluate_for_every_head(paragraph_shards, tmp_path, head, capsys):
    from eval.__main__ import main as eval_main
    from train.config import parse_config
    from train.trainer import train

    assert all(len(frame_members(s)) == 64 for s in iter_samples(shard_urls(str(paragraph_shards / "shards"))))
    run = tmp_path / "run"
    config = parse_config(
        ["--train-shards", str(paragraph_shards / "shards"), "--output-dir", str(run), "--model", "tiny-ViT-112",
         "--batch-size", "3", "--steps-per-epoch", "1", "--epochs", "1", "--max-frames", "64", "--max-words", "64",
         "--workers", "0", "--lr", "1e-3", "--coef-lr", "1", *HEADS[head]]
    )  # fmt: skip
    train(config)
    assert eval_main(["--checkpoint", str(run), "--shards", str(paragraph_shards / "shards"), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_videos"] == 3 and metrics["settings"]["max_frames"] == 64 and metrics["settings"]["max_words"] == 64


def test_past_what_the_weights_support_is_a_clear_error(paragraph_shards, tmp_path):
    from train.config import parse_config
    from train.trainer import train

    common = ["--train-shards", str(paragraph_shards / "shards"), "--output-dir", str(tmp_path / "r"), "--model", "tiny-ViT-112",
              "--batch-size", "3", "--steps-per-epoch", "1", "--workers", "0"]  # fmt: skip
    with pytest.raises(ValueError, match="80 tokens exceed the model's context of 77|max.words"):
        train(parse_config([*common, "--max-words", "80", "--max-frames", "8"]))
    with pytest.raises(ValueError, match="needs 80 positions"):
        train(parse_config([*common, "--max-frames", "80", "--sim-header", "seqTransf"]))


# --- re-sampling a --keep-transcode build ----------------------------------------------------


def test_keep_transcode_shards_resample_to_64_frames_without_the_sources(tmp_path, long_clip, capsys):
    from pipeline.__main__ import main
    from pipeline.annotations import VideoRecord

    videos = tmp_path / "videos"
    place(videos, "long.mp4", long_clip)
    records = [VideoRecord("long", "long", ["a long clip"], split="test"), VideoRecord("part", "long", ["its middle"], start_s=10.0, end_s=16.0)]
    settings = ExtractionSettings(short_side=32, keep_transcode=True)
    build_shards(records, str(videos), Store(str(tmp_path / "twelve")), settings, QUIET)
    (videos / "long.mp4").unlink()  # the sources are gone
    assert main(["resample", "--shards", str(tmp_path / "twelve"), "--out", str(tmp_path / "many"), "--max-frames", "64"]) == 0
    assert "resampled: 2 samples" in capsys.readouterr().out
    old, new = built(tmp_path / "twelve"), built(tmp_path / "many")
    assert old["long"]["frames"]["count"] == 12 and new["long"]["frames"]["count"] == 40
    assert new["long"]["frames"]["sampled_at_s"] == [float(s) for s in range(40)]
    assert new["part"]["frames"]["sampled_at_s"] == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]  # a segment stays in source time
    assert new["long"]["captions"] == ["a long clip"] and new["long"]["split"] == "test"
    manifest = json.loads((tmp_path / "many" / "manifest.json").read_text())
    assert manifest["settings"]["max_frames"] == 64 and manifest["num_samples"] == 2
    with pytest.raises(Exception, match="without --keep-transcode"):
        from pipeline.resample import resample

        build_shards(records[:1], str(tmp_path), Store(str(tmp_path / "plain")), ExtractionSettings(short_side=32), QUIET)
        resample(str(tmp_path / "plain"), str(tmp_path / "x"), max_frames=64)


def test_other_fsspec_urls_go_through_one_temporary_file_that_is_removed(tmp_path, clip, monkeypatch):
    """A backend ffmpeg cannot read (here fsspec's in-memory one) is copied to a temporary
    file for the decode only: afterwards no copy is left."""
    import fsspec

    import pipeline.remote_videos as remote

    fsspec.filesystem("memory").pipe("/bucket/raw/m.mp4", clip.read_bytes())
    seen: list[str] = []
    original = remote.extract_video

    def spy(source, *args, **kwargs):
        seen.append(source)
        assert Path(source).is_file()
        return original(source, *args, **kwargs)

    monkeypatch.setattr(remote, "extract_video", spy)
    video = remote.extract_location("memory://bucket/raw/m.mp4", ExtractionSettings(short_side=32))
    assert video.num_candidates == 6 and len(seen) == 1 and not Path(seen[0]).exists()
    with pytest.raises(Exception, match="object not found"):
        remote.extract_location("memory://bucket/raw/absent.mp4", ExtractionSettings(short_side=32))
