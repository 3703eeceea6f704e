"""The evaluator end to end on a briefly trained tiny model: files, numbers, report."""

import json
import re

import numpy as np
import pytest
import torch

from eval.__main__ import main as eval_main
from eval.encode import encode_split
from eval.metrics import metrics_from_matrix
from model.backbone import tokenizer_for
from model.checkpoint import load_checkpoint
from model.restore import restore_model
from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from runtime.run_folder import latest_checkpoint
from shards.reader import shard_urls
from shards.storage import Store
from train.config import parse_config
from train.trainer import train


@pytest.fixture(scope="module")
def trained(sample_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    records = load_annotations(str(sample_dataset / "annotations.jsonl"))
    build_shards(records, str(sample_dataset / "videos"), Store(str(root / "shards")), ExtractionSettings(short_side=112),
                 BuildOptions(samples_per_shard=3, workers=2, show_progress=False))  # fmt: skip
    config = parse_config(["--train-shards", str(root / "shards"), "--output-dir", str(root / "run"), "--model", "tiny-ViT-112",
                           "--sim-header", "seqTransf", "--batch-size", "4", "--steps-per-epoch", "3", "--epochs", "1",
                           "--max-frames", "8", "--workers", "0", "--lr", "1e-3", "--coef-lr", "1"])  # fmt: skip
    train(config)
    return root


def test_eval_writes_metrics_report_and_histogram(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    assert (
        eval_main(["--checkpoint", str(trained / "run"), "--shards", str(trained / "shards"), "--out", str(out), "--block-size", "5", "--json"]) == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert printed["raw"] == metrics["raw"]
    assert metrics["num_videos"] == 8 and metrics["num_captions"] == 24  # 3 captions per clip: multi-caption protocol
    assert metrics["raw"]["t2v"]["N"] == 24 and metrics["raw"]["v2t"]["N"] == 8
    assert set(metrics) >= {"dual_softmax", "inverted_softmax", "checkpoint", "model", "settings", "step"}
    assert metrics["model"]["sim_header"] == "seqTransf" and metrics["step"] == 3
    page = (out / "report.html").read_text()
    assert page.count("rank of ground truth: ") == 12  # 12 sampled text queries
    assert page.count("class='hit") == 12 * 5  # top 5 videos each
    ground_truth_ranks = [int(r) for r in re.findall(r"rank of ground truth: (\d+)", page)]
    missed = sum(rank > 5 for rank in ground_truth_ranks)
    assert page.count("class='hit gt'") == 12 - missed
    assert page.count("class='missed gt'") == missed  # a ground truth outside the top 5 is shown on its own
    assert len(re.findall(r"data:image/jpeg;base64,", page)) == 12 * 5 + missed  # every hit and every missed truth shows its frames
    assert (out / "rank_histogram.png").stat().st_size > 1000


def test_eval_numbers_equal_dense_reference(trained, capsys):
    state = load_checkpoint(latest_checkpoint(str(trained / "run" / "checkpoints")))
    model, config = restore_model(state)
    split = encode_split(
        model, shard_urls(str(trained / "shards")), tokenizer_for(config.model), torch.device("cpu"), config.max_frames, image_size=112
    )
    dense = (split.text @ split.video_pooled.T).numpy()
    expected = metrics_from_matrix(dense, split.caption_to_video.numpy())
    out_dir = trained / "eval_dense"
    assert eval_main(["--checkpoint", str(trained / "run"), "--shards", str(trained / "shards"), "--out", str(out_dir), "--post"]) == 0
    metrics = json.loads((out_dir / "metrics.json").read_text())
    for direction in ("t2v", "v2t"):
        for key, value in expected[direction].items():
            assert metrics["raw"][direction][key] == pytest.approx(value)
    assert np.isfinite(dense).all()
    # without --json: the demo's table, its numbers those of metrics.json, chance beside them
    table = {line.split("  ")[0].strip(): line.split()[-6:] for line in capsys.readouterr().out.splitlines() if line.startswith(("t2v", "v2t", "chance"))}
    assert table["t2v"][:5] == [f"{metrics['raw']['t2v'][c]:.1f}" for c in ("R1", "R5", "R10", "MdR", "MnR")] and table["t2v"][5] == "24"
    assert table["v2t"][:5] == [f"{metrics['raw']['v2t'][c]:.1f}" for c in ("R1", "R5", "R10", "MdR", "MnR")] and table["v2t"][5] == "8"
    chance = next(v for k, v in table.items() if k.startswith("chance"))
    assert chance[-5:] == ["12.5", "62.5", "100.0", "4.5", "4.5"]  # 8 videos


def test_eval_bad_inputs_are_clear(tmp_path, trained, capsys):
    assert eval_main(["--checkpoint", str(tmp_path / "none.pt"), "--shards", str(trained / "shards")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert eval_main(["--checkpoint", str(trained / "run"), "--shards", str(tmp_path / "noshards")]) == 2
    assert "noshards" in capsys.readouterr().err


def test_eval_reports_coarse_to_fine_for_a_token_interaction_model(trained, tmp_path, capsys):
    run = tmp_path / "wti"
    config = parse_config(["--train-shards", str(trained / "shards"), "--output-dir", str(run), "--model", "tiny-ViT-112",
                           "--sim-header", "seqTransf", "--interaction", "wti", "--coarse-weight", "1", "--batch-size", "4",
                           "--steps-per-epoch", "2", "--epochs", "1", "--max-frames", "8", "--workers", "0"])  # fmt: skip
    train(config)
    out = tmp_path / "eval"
    assert (
        eval_main(["--checkpoint", str(run), "--shards", str(trained / "shards"), "--out", str(out), "--rerank-topk", "3", "--post", "--json"]) == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metrics = json.loads((out / "metrics.json").read_text())
    stages = metrics["coarse_to_fine"]
    assert printed["coarse_to_fine"]["topk"] == 3 == stages["topk"]
    assert stages["fine_all"]["t2v"] == metrics["raw"]["t2v"] and stages["fine_all"]["v2t"] == metrics["raw"]["v2t"]
    assert stages["two_stage"]["t2v"]["N"] == 24 and stages["coarse_only"]["v2t"]["N"] == 8
    assert all(stages[name]["seconds"] > 0 for name in ("coarse_only", "fine_all", "two_stage"))
    assert metrics["model"]["interaction"] == "wti"


def test_eval_report_of_an_emcl_model(trained, tmp_path):
    """The report scores one caption row at a time; EMCL-Net's scores come from its 32 x 32 EM grid,
    so those rows must be cut from the grid's blocks (this once stopped the evaluator with an error)."""
    config = parse_config(["--train-shards", str(trained / "shards"), "--output-dir", str(tmp_path / "emcl"), "--model", "tiny-ViT-112",
                           "--sim-header", "seqTransf", "--emcl", "--emcl-bases", "4", "--batch-size", "4", "--steps-per-epoch", "2",
                           "--epochs", "1", "--max-frames", "8", "--workers", "0", "--lr", "1e-3", "--coef-lr", "1"])  # fmt: skip
    train(config)
    out = tmp_path / "eval"
    assert eval_main(["--checkpoint", str(tmp_path / "emcl"), "--shards", str(trained / "shards"), "--out", str(out), "--rerank-topk", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["raw"]["t2v"]["N"] == 24 and "coarse_to_fine" in metrics
    page = (out / "report.html").read_text()
    assert page.count("class='hit") == 12 * 5


def test_qb_norm_with_another_splits_bank_matches_a_dense_computation(trained, tmp_path):
    """--qb-norm-bank: the bank's captions normalise each test video's column (t2v), the bank's videos each test
    caption's row (v2t), with the model's temperature; checked against the dense formula on the same features."""
    shards = sorted(str(p) for p in (trained / "shards").glob("shard-*.tar"))
    bank_pattern = "{" + ",".join(shards[:2]) + "}"  # another split: the first six clips
    out = tmp_path / "bank"
    assert eval_main(["--checkpoint", str(trained / "run"), "--shards", str(trained / "shards"), "--out", str(out),
                      "--qb-norm-bank", bank_pattern, "--json"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())["qb_norm_bank"]
    state = load_checkpoint(latest_checkpoint(str(trained / "run" / "checkpoints")))
    model, config = restore_model(state)
    test = encode_split(model, shard_urls(str(trained / "shards")), tokenizer_for(config.model), torch.device("cpu"), config.max_frames, image_size=112)
    bank = encode_split(model, shard_urls(bank_pattern), tokenizer_for(config.model), torch.device("cpu"), config.max_frames, image_size=112)
    temperature = 1.0 / model.logit_scale().item()
    scores = test.text @ test.video_pooled.T
    per_video = torch.logsumexp((bank.text @ test.video_pooled.T) / temperature, dim=0)
    per_caption = torch.logsumexp((test.text @ bank.video_pooled.T) / temperature, dim=1)
    assert metrics["captions"] == len(bank.captions) == 18 and metrics["videos"] == 6
    for method in ("dual_softmax", "inverted_softmax"):
        t2v_prior, v2t_prior = scores / temperature - per_video[None, :], scores / temperature - per_caption[:, None]
        t2v = scores * t2v_prior.exp() if method == "dual_softmax" else t2v_prior
        v2t = scores * v2t_prior.exp() if method == "dual_softmax" else v2t_prior
        expected_t2v = metrics_from_matrix(t2v.numpy(), test.caption_to_video.numpy())["t2v"]
        expected_v2t = metrics_from_matrix(v2t.numpy(), test.caption_to_video.numpy())["v2t"]
        for key in ("R1", "R5", "R10", "MdR", "MnR"):
            assert metrics[method]["t2v"][key] == pytest.approx(expected_t2v[key]), (method, key)
            assert metrics[method]["v2t"][key] == pytest.approx(expected_v2t[key]), (method, key)
