"""``--keep-best METRIC`` and ``--eval-every-epochs`` (issue 35): the best validation checkpoint kept beside the
latest with its step and epoch, through a resume, and read by ``python -m eval --which best``."""

from __future__ import annotations

import json

import pytest

from eval.__main__ import main as eval_main
from model.checkpoint import load_checkpoint
from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from shards.storage import Store
from train.__main__ import main as train_main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shards(sample_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("best") / "shards"
    build_shards(load_annotations(str(sample_dataset / "annotations.jsonl")), str(sample_dataset / "videos"), Store(str(out)),
                 ExtractionSettings(short_side=112), BuildOptions(samples_per_shard=3, workers=1, show_progress=False))  # fmt: skip
    return out


def _train(shards, run, epochs: int, *extra: str) -> int:
    return train_main(["--train-shards", str(shards), "--val-shards", str(shards), "--output-dir", str(run), "--model", "tiny-ViT-112",
                       "--max-frames", "3", "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", str(epochs), "--workers", "0",
                       "--lr", "1e-3", "--optimizer", "adamw", "--log-every-steps", "1", *extra])  # fmt: skip


def _records(run, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == kind]


def test_the_best_checkpoint_is_kept_through_a_resume_and_evaluated_by_name(shards, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(shards, run, 2, "--keep-best", "t2v/MnR", "--eval-every-steps", "1") == 0
    assert _train(shards, run, 3, "--keep-best", "t2v/MnR", "--eval-every-steps", "1") == 0  # resumed: steps 5 and 6
    evals = _records(run, "eval")
    assert [e["step"] for e in evals] == [1, 2, 3, 4, 5, 6]
    best = min(evals, key=lambda e: (e["t2v"]["MnR"], e["step"]))  # the first of equal values stays
    record = json.loads((run / "checkpoints" / "best.json").read_text())
    assert record["metric"] == "t2v/MnR" and record["value"] == best["t2v"]["MnR"] and record["step"] == best["step"]
    assert record["epoch"] == best["step"] / 2
    assert load_checkpoint(str(run / "checkpoints" / "best.pt"))["step"] == best["step"]
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(run), "--shards", str(shards), "--which", "best", "--json"]) == 0
    captured = capsys.readouterr()
    # --json: the checkpoint line goes to stderr, the metrics alone to stdout; the value is shown rounded (1.462, not 1.4615384615384617)
    assert "best.pt (best t2v/MnR" in captured.err and f"from step {best['step']}" in captured.err
    assert f"= {best['t2v']['MnR']:.4g}," in captured.err
    assert json.loads(captured.out)["raw"]["t2v"]["MnR"] == pytest.approx(best["t2v"]["MnR"])


def test_evaluation_every_n_epochs_and_at_the_end(shards, tmp_path):
    run = tmp_path / "run"
    assert _train(shards, run, 3, "--eval-every-epochs", "2") == 0
    assert [e["step"] for e in _records(run, "eval")] == [4, 6]  # epoch 2, then the run's end
    assert eval_main(["--checkpoint", str(run), "--shards", str(shards), "--which", "best"]) == 2  # no --keep-best: said, not guessed
