"""Every head learns retrieval from generated videos on CPU (tiny model, from scratch).

Chance for N videos: t2v R@5 = 500/N %, MnR = (N + 1) / 2. The model is trained on the
train split and scored on it (3 captions per clip, multi-caption protocol): with no
pretrained weights available offline and minutes of CPU, fitting the training clips is the
claim tested here; the ability to tell motion direction apart is tested at the head level
in test_heads.py.
"""

import pytest

from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from shards.storage import Store
from tools.make_sample_data import make_sample_data
from train.config import parse_config
from train.heads import HEADS
from train.trainer import train


@pytest.fixture(scope="module")
def shapes_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    make_sample_data(str(root), num_videos=48, durations=(4.0, 5.0, 6.0), broken=False)
    records = [r for r in load_annotations(str(root / "annotations.jsonl"))]
    build_shards(records, str(root / "videos"), Store(str(root / "shards")), ExtractionSettings(short_side=112),
                 BuildOptions(samples_per_shard=8, workers=2, show_progress=False))  # fmt: skip
    return root / "shards"


@pytest.mark.parametrize("head", HEADS)
def test_head_beats_chance_by_a_wide_margin(shapes_shards, tmp_path, head):
    config = parse_config(["--train-shards", str(shapes_shards), "--val-shards", str(shapes_shards), "--output-dir", str(tmp_path / head),
                           "--model", "tiny-ViT-112", "--sim-header", head, "--batch-size", "16", "--steps-per-epoch", "100",
                           "--epochs", "1", "--max-frames", "6", "--workers", "1", "--lr", "2e-3", "--coef-lr", "1",
                           "--warmup-fraction", "0.05", "--log-every-steps", "50"])  # fmt: skip
    result = train(config)
    t2v = result["eval"]["t2v"]
    videos = result["eval"]["num_videos"]
    assert videos == 48 and t2v["N"] == 144
    chance_r5, chance_mnr = 500 / videos, (videos + 1) / 2
    assert t2v["R5"] >= 2.5 * chance_r5, t2v
    assert t2v["MnR"] <= 0.5 * chance_mnr, t2v
