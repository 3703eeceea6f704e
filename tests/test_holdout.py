"""A validation split of one's own data (issue 41): ``pipeline build --val-fraction F`` writes OUT/train and
OUT/val, video-disjoint and the same whatever the order or company of the annotations; a run validated on
its own training shards says so."""

from __future__ import annotations

import json

import pytest

from pipeline.__main__ import main as pipeline_main
from pipeline.holdout import is_held_out, split_records
from pipeline.records import VideoRecord
from train.mixture import validation_is_held_out


def _records(names: list[str]) -> list[VideoRecord]:
    return [VideoRecord(video_id=name, reference=name, captions=[f"caption of {name}"]) for name in names]


def test_the_split_is_deterministic_disjoint_and_order_free():
    names = [f"video{i:04d}" for i in range(2000)]
    parts = split_records(_records(names), 0.2)
    held = {r.reference for r in parts["val"]}
    assert held.isdisjoint(r.reference for r in parts["train"]) and len(held) + len(parts["train"]) == 2000
    assert 0.17 < len(held) / 2000 < 0.23  # a hash, not a count: close to the fraction
    again = split_records(_records(list(reversed(names[:500])) + ["another"]), 0.2)  # other order, fewer and other videos
    assert {r.reference for r in again["val"]} - {"another"} == held & set(names[:500])
    segments = [VideoRecord(video_id=f"v1_{i}", reference="v1.mp4", captions=["x"]) for i in range(3)] + _records(names[:50])
    parted = split_records(segments, 0.5)
    assert sum(r.reference == "v1.mp4" for r in parted["val" if is_held_out("v1.mp4", 0.5) else "train"]) == 3  # a video's segments together
    with pytest.raises(ValueError, match="leaves the val part empty"):
        split_records(_records(names[:3]), 0.0001)
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_records(_records(names), 1.0)


def test_a_build_with_val_fraction_writes_both_parts(sample_dataset, tmp_path):
    out = tmp_path / "shards"
    assert pipeline_main(["build", "--annotations", str(sample_dataset / "annotations.jsonl"), "--videos", str(sample_dataset / "videos"),
                          "--out", str(out), "--val-fraction", "0.3", "--short-side", "32", "--workers", "1", "--no-progress",
                          "--max-failure-fraction", "1"]) == 0  # fmt: skip
    manifests = {part: json.loads((out / part / "manifest.json").read_text()) for part in ("train", "val")}
    for part, manifest in manifests.items():
        assert manifest["holdout"]["part"] == part and manifest["holdout"]["fraction"] == 0.3 and "sha256" in manifest["holdout"]["rule"]
    listed = [json.loads(line) for line in (sample_dataset / "annotations.jsonl").read_text().splitlines() if line.strip()]
    assert manifests["train"]["holdout"]["videos"] + manifests["val"]["holdout"]["videos"] == len(listed)
    expected_val = {row["video"] for row in listed if is_held_out(row["video"], 0.3)}
    assert manifests["val"]["holdout"]["videos"] == len(expected_val) > 0


def test_validating_on_training_shards_is_noticed(tmp_path):
    (tmp_path / "a").mkdir()
    assert validation_is_held_out(None, [str(tmp_path / "a")]) is None
    assert validation_is_held_out(str(tmp_path / "a") + "/", [str(tmp_path / "a")]) is False
    assert validation_is_held_out(str(tmp_path / "b"), [str(tmp_path / "a")]) is True
    assert validation_is_held_out("s3://bucket/val", ["s3://bucket/train/", "s3://bucket/val/"]) is False
