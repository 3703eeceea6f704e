"""End-to-end builds: contents, failures, reruns, cluster jobs, kills, S3."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.__main__ import main as pipeline_main
from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from shards.manifest import BuildStateError, completed_units, merge_manifest, read_manifest, without_timing
from shards.reader import ReadErrors, iter_samples, shard_urls
from shards.sample_format import frame_members, is_complete_sample, sample_metadata
from shards.storage import StorageError, Store
from tests.conftest import REPO_ROOT

BROKEN = {"broken_truncated", "broken_random", "broken_empty", "broken_audio_only", "broken_missing"}
GOOD = {f"clip{i:03d}" for i in range(8)}


def build(dataset: Path, out: str, workers: int = 1, **options) -> object:
    records = load_annotations(str(dataset / "annotations.jsonl"))
    settings = options.pop("settings", ExtractionSettings())
    return build_shards(
        records, str(dataset / "videos"), Store(out), settings, BuildOptions(workers=workers, show_progress=False, **options)
    )


def read_all(location: str) -> list[dict]:
    errors = ReadErrors()
    samples = list(iter_samples(shard_urls(location), errors.handler))
    assert errors.errors == []
    return samples


def test_build_writes_every_good_video_once_and_records_every_broken_one(sample_dataset, tmp_path):
    out = tmp_path / "out"
    report = build(sample_dataset, str(out), workers=2, samples_per_shard=4)
    samples = read_all(str(out))
    assert {s["__key__"] for s in samples} == GOOD
    assert len(samples) == len(GOOD)
    for sample in samples:
        assert is_complete_sample(sample)
        meta = sample_metadata(sample)
        assert meta["key"] == sample["__key__"]
        assert len(meta["captions"]) == 3 and meta["split"] in {"train", "test"}
        assert meta["frames"]["count"] == len(frame_members(sample)) == meta["frames"]["candidates"]
        assert meta["frames"]["timestamps_s"] == [float(i) for i in range(meta["frames"]["count"])]
        assert min(meta["frames"]["width"], meta["frames"]["height"]) == 224
        assert meta["settings"]["transcode_fps"] == 3.0
        assert meta["source"]["duration_s"] in (4.0, 7.0)
    manifest = read_manifest(Store(str(out)))
    assert manifest["num_samples"] == 8 and manifest["num_failures"] == 5 and manifest["num_videos"] == 13
    assert [s["name"] for s in manifest["shards"]] == ["shard-000000.tar", "shard-000001.tar"]  # units 2, 3: all broken
    assert sum(s["samples"] for s in manifest["shards"]) == 8
    for shard in manifest["shards"]:
        assert (out / shard["name"]).stat().st_size == shard["bytes"]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {f["video_id"] for f in failures} == BROKEN
    assert all(f["error"] for f in failures)
    assert report.samples_written == 8 and report.failures == 5
    assert not [p for p in out.iterdir() if ".partial-" in p.name]


def test_worker_count_does_not_change_the_bytes(sample_dataset, tmp_path):
    build(sample_dataset, str(tmp_path / "one"), workers=1, samples_per_shard=5)
    build(sample_dataset, str(tmp_path / "two"), workers=2, samples_per_shard=5)
    for name in ("shard-000000.tar", "shard-000001.tar", "failures.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    manifests = [json.loads((tmp_path / run / "manifest.json").read_text()) for run in ("one", "two")]
    assert without_timing(manifests[0]) == without_timing(manifests[1])


def test_rerun_skips_finished_units_and_refuses_other_settings(sample_dataset, tmp_path):
    out = tmp_path / "out"
    build(sample_dataset, str(out), samples_per_shard=4)
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    report = build(sample_dataset, str(out), samples_per_shard=4)
    assert report.units_built == 0 and report.units_skipped == report.units_total == 4
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == before
    with pytest.raises(BuildStateError, match="samples_per_shard"):
        build(sample_dataset, str(out), samples_per_shard=3)
    with pytest.raises(BuildStateError, match="settings"):
        build(sample_dataset, str(out), samples_per_shard=4, settings=ExtractionSettings(max_frames=8))


def test_unfinished_unit_is_redone(sample_dataset, tmp_path):
    out = tmp_path / "out"
    build(sample_dataset, str(out), samples_per_shard=4)
    reference = (out / "shard-000001.tar").read_bytes()
    (out / "_build" / "units" / "000001.json").unlink()
    (out / "shard-000001.tar").write_bytes(reference[:5000])  # a stale, truncated leftover
    (out / ".shard-000001.tar.partial-deadbeef").write_bytes(b"junk")
    (out / ".shard-000001-1.tar.partial-deadbeef").write_bytes(b"junk")
    (out / "_build" / "units" / ".000001.json.partial-deadbeef").write_bytes(b"junk")
    (out / ".shard-000000.tar.partial-cafe").write_bytes(b"another job's write in progress")
    report = build(sample_dataset, str(out), samples_per_shard=4)
    assert report.units_built == 1
    assert (out / "shard-000001.tar").read_bytes() == reference
    assert not [p.name for p in out.rglob("*partial-deadbeef")]
    assert (out / ".shard-000000.tar.partial-cafe").exists()  # unit 0 was not ours to redo


def test_cluster_jobs_cover_the_build_exactly_once(sample_dataset, tmp_path):
    single, split = tmp_path / "single", tmp_path / "split"
    build(sample_dataset, str(single), samples_per_shard=2)
    first = build(sample_dataset, str(split), samples_per_shard=2, num_jobs=2, job_index=0)
    assert first.manifest is None and completed_units(Store(str(split))) == {0, 2, 4, 6}
    with pytest.raises(BuildStateError, match=r"3 of 7 units not built yet \(1, 3, 5\)"):
        merge_manifest(Store(str(split)))
    build(sample_dataset, str(split), samples_per_shard=2, num_jobs=2, job_index=1)
    assert pipeline_main(["merge-manifest", "--out", str(split)]) == 0
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (split, single)]
    assert without_timing(manifests[0]) == without_timing(manifests[1])
    assert {s["__key__"] for s in read_all(str(split))} == GOOD


def test_slurm_array_environment_selects_the_share(sample_dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    code = pipeline_main(
        ["build", "--annotations", str(sample_dataset / "annotations.jsonl"), "--videos", str(sample_dataset / "videos"),
         "--out", str(tmp_path / "out"), "--samples-per-shard", "2", "--workers", "1", "--no-progress"]
    )  # fmt: skip
    assert code == 0
    assert "job 2/3" in capsys.readouterr().out
    assert completed_units(Store(str(tmp_path / "out"))) == {1, 4}


def test_max_shard_bytes_splits_a_unit_into_parts(sample_dataset, tmp_path):
    out = tmp_path / "out"
    build(sample_dataset, str(out), samples_per_shard=8, max_shard_bytes=600_000)
    manifest = read_manifest(Store(str(out)))
    names = [s["name"] for s in manifest["shards"]]
    assert len(names) > 1 and names[0] == "shard-000000.tar" and names[1] == "shard-000000-1.tar"
    assert all(s["bytes"] <= 600_000 or s["samples"] == 1 for s in manifest["shards"])
    assert {s["__key__"] for s in read_all(str(out))} == GOOD


def _cli(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "build", "--annotations", str(dataset / "annotations.jsonl"),
            "--videos", str(dataset / "videos"), "--out", str(out), "--samples-per-shard", "1", "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize("units_before_kill,seed", [(0, 1), (1, 2), (3, 3), (6, 4)])
def test_build_killed_midway_then_rerun_loses_and_duplicates_nothing(sample_dataset, tmp_path, units_before_kill, seed):
    """Killed at a random moment after N finished units (N = 0: possibly before the plan exists)."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        _cli(sample_dataset, out, "--workers", "1"), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    units = out / "_build" / "units"
    deadline = time.monotonic() + 120

    def records() -> int:  # finished unit records; a killed write may leave a hidden partial
        return len(list(units.glob("[0-9]*.json"))) if units.is_dir() else 0

    while time.monotonic() < deadline and records() < units_before_kill:
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 0.03))  # somewhere inside the next unit: ffmpeg, JPEG, tar, publish
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = records()
    assert units_before_kill <= done_before < 13, "the kill must land mid-build"
    assert not (out / "manifest.json").exists()
    rerun = subprocess.run(_cli(sample_dataset, out, "--workers", "2"), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    if done_before:
        assert f"skipped {done_before} already done" in rerun.stdout
    samples = read_all(str(out))
    keys = [s["__key__"] for s in samples]
    assert sorted(keys) == sorted(GOOD) and len(keys) == len(set(keys))
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]


def test_cli_reports_bad_input_clearly(tmp_path, capsys, sample_dataset):
    code = pipeline_main(["build", "--annotations", str(tmp_path / "none.jsonl"), "--videos", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2 and "none.jsonl" in capsys.readouterr().err
    code = pipeline_main(
        [
            "build",
            "--annotations",
            str(sample_dataset / "annotations.jsonl"),
            "--videos",
            str(tmp_path / "novideos"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "novideos" in capsys.readouterr().err
    code = pipeline_main(["merge-manifest", "--out", str(tmp_path / "empty")])
    assert code == 2 and "plan" in capsys.readouterr().err


def test_real_msrvtt_sample_builds_with_missing_videos_ignored(msrvtt_sample, tmp_path):
    out = tmp_path / "msrvtt"
    records = load_annotations(str(msrvtt_sample / "MSRVTT_JSFUSION_test.csv"))
    build_shards(records, str(msrvtt_sample / "videos"), Store(str(out)), ExtractionSettings(),
                 BuildOptions(samples_per_shard=20, workers=2, show_progress=False, ignore_missing=True))  # fmt: skip
    manifest = read_manifest(Store(str(out)))
    assert manifest["ignored_missing"] == 961
    assert manifest["num_samples"] + manifest["num_failures"] == 39
    assert manifest["num_samples"] >= 37
    sample = next(s for s in read_all(str(out)) if s["__key__"] == "video7131")
    assert sample_metadata(sample)["captions"] == [r.captions[0] for r in records if r.video_id == "video7131"]


def test_s3_output_against_a_local_s3_server(sample_dataset, s3_bucket, tmp_path):
    url = f"s3://{s3_bucket}/msr/train"
    build(sample_dataset, url, workers=2, samples_per_shard=4)
    store = Store(url)
    manifest = read_manifest(store)
    assert manifest["num_samples"] == 8
    assert store.listdir("") == ["_build", "failures.jsonl", "manifest.json", "shard-000000.tar", "shard-000001.tar"]
    urls = shard_urls(url)
    assert urls[0] == f"s3://{s3_bucket}/msr/train/shard-000000.tar"
    assert {s["__key__"] for s in read_all(url)} == GOOD
    local = tmp_path / "local"
    build(sample_dataset, str(local), samples_per_shard=4)
    assert store.read_bytes("shard-000001.tar") == (local / "shard-000001.tar").read_bytes()
    assert build(sample_dataset, url, samples_per_shard=4).units_built == 0


def test_s3_unreachable_bucket_is_a_clear_error(sample_dataset, s3_endpoint):
    with pytest.raises(StorageError, match="no-such-bucket"):
        build(sample_dataset, "s3://no-such-bucket/x", samples_per_shard=4)
    assert os.environ["AWS_ENDPOINT_URL"] == s3_endpoint


def test_annotation_without_captions_is_a_recorded_failure(sample_dataset, tmp_path):
    annotations = tmp_path / "ann.jsonl"
    annotations.write_text(
        json.dumps({"video": "clip000.mp4", "captions": ["", "   "]})
        + "\n"
        + json.dumps({"video": "clip001.mp4", "captions": ["a clip"]})
        + "\n"
    )
    records = load_annotations(str(annotations))
    out = tmp_path / "out"
    build_shards(
        records, str(sample_dataset / "videos"), Store(str(out)), ExtractionSettings(), BuildOptions(workers=1, show_progress=False)
    )
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["video_id"], f["error"]) for f in failures] == [("clip000", "annotation has no non-empty caption")]
    assert [s["__key__"] for s in read_all(str(out))] == ["clip001"]
