"""Dataset mixtures (issue 35): ``--train-shards "A::B" --train-weights 1::3``: samples drawn by weight on every
rank, each source read as its own stream, epochs from the manifests together, per-source counts in the run
log, and a missing or empty source refused before any step, by name."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from shards.storage import Store
from tests.conftest import write_time_coded_video
from train.__main__ import main as train_main
from train.data import ClipStream, StreamConfig
from train.mixture import resolve_sources

pytestmark = pytest.mark.integration
SETTINGS = ExtractionSettings(short_side=112)


def _tokens(texts, context_length):
    return torch.zeros(len(texts), context_length, dtype=torch.long)


@pytest.fixture(scope="module")
def two_sources(sample_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    build_shards(load_annotations(str(sample_dataset / "annotations.jsonl")), str(sample_dataset / "videos"), Store(str(root / "a")),
                 SETTINGS, BuildOptions(samples_per_shard=4, workers=1, show_progress=False))  # fmt: skip
    (root / "videos").mkdir()
    for index in range(4):
        write_time_coded_video(root / "videos" / f"b{index}.mp4", 64, 48, 3.0)
    (root / "b.jsonl").write_text("".join(json.dumps({"video": f"b{i}.mp4", "caption": f"clip b{i}"}) + "\n" for i in range(4)))
    build_shards(load_annotations(str(root / "b.jsonl")), str(root / "videos"), Store(str(root / "b")), SETTINGS,
                 BuildOptions(samples_per_shard=2, workers=1, show_progress=False))  # fmt: skip
    return root


def _keys(config: StreamConfig, rank: int, world_size: int, batches: int) -> list[str]:
    stream = iter(ClipStream(config, _tokens, rank, world_size, start_step=0))
    return [key for _ in range(batches) for key in next(stream)["keys"]]


def test_samples_are_drawn_by_weight_on_every_rank(two_sources):
    sources = resolve_sources(f"{two_sources / 'a'}::{two_sources / 'b'}", "1::3")
    assert [s.samples for s in sources] == [8, 4] and [s.weight for s in sources] == [1.0, 3.0]
    config = StreamConfig(urls=sources[0].urls, sources=tuple((s.urls, s.weight) for s in sources), batch_size=8, max_frames=3,
                          image_size=112, workers=0, shuffle_buffer=20)  # fmt: skip
    for rank in (0, 1):
        keys = _keys(config, rank, 2, 40)
        share = sum(key.startswith("b") for key in keys) / len(keys)
        assert 0.65 < share < 0.85, (rank, share)  # 3 / (1 + 3) = 0.75; 320 draws
        assert any(not key.startswith("b") for key in keys)
    stream = iter(ClipStream(config, _tokens, 0, 1, start_step=0))
    for _ in range(5):
        batch = next(stream)
    assert sum(batch["drawn_per_source"]) >= 40 and batch["drawn_per_source"][1] > batch["drawn_per_source"][0]


def test_a_mixed_run_reports_each_source_and_counts_its_epoch_from_both_manifests(two_sources, tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--train-shards", f"{two_sources / 'a'}::{two_sources / 'b'}", "--train-weights", "1::3", "--output-dir", str(run),
                       "--model", "tiny-ViT-112", "--max-frames", "3", "--batch-size", "4", "--epochs", "1", "--workers", "0",
                       "--log-every-steps", "1"]) == 0  # fmt: skip
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = next(r for r in records if r["kind"] == "config")
    assert config["steps_per_epoch"] == (8 + 4) // 4
    last = [r for r in records if r["kind"] == "train"][-1]
    drawn = last["drawn_per_source_rank0"]
    assert set(drawn) == {str(two_sources / "a"), str(two_sources / "b")} and sum(drawn.values()) >= 12


def test_a_missing_or_empty_source_is_refused_before_any_step(two_sources, tmp_path, capsys):
    (tmp_path / "none.jsonl").write_text(json.dumps({"video": "gone.mp4", "caption": "x"}) + "\n")
    build_shards(load_annotations(str(tmp_path / "none.jsonl")), str(tmp_path), Store(str(tmp_path / "empty")), SETTINGS,
                 BuildOptions(workers=1, show_progress=False))  # fmt: skip
    common = ["--output-dir", str(tmp_path / "run"), "--model", "tiny-ViT-112", "--max-frames", "3", "--batch-size", "4", "--workers", "0"]
    assert train_main(["--train-shards", f"{two_sources / 'a'}::{tmp_path / 'nowhere'}", *common]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert train_main(["--train-shards", f"{two_sources / 'a'}::{tmp_path / 'empty'}", *common]) == 2
    assert "empty" in (err := capsys.readouterr().err) and "no samples" in err
    assert train_main(["--train-shards", f"{two_sources / 'a'}::{two_sources / 'b'}", "--train-weights", "1", *common]) == 2
    assert "1 weights for 2 sources" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
