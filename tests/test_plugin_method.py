"""A method added in one file outside model/ (tests/plugin_max_pool.py) trains, evaluates, indexes and
searches through the product's own commands, with no edit to any core file (docs/adding-a-method.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch
import torch.nn.functional as F

from eval.__main__ import main as eval_main
from model.backbone import tokenizer_for
from model.trained_model import load_trained_model
from search.index import main as index_main
from search.index_format import VideoIndex
from tests.conftest import REPO_ROOT
from train.__main__ import main as train_main

PLUGIN = ["--methods-from", "tests.plugin_max_pool"]


def run_module(*argv: str) -> subprocess.CompletedProcess:
    """A command in a fresh interpreter: only what the checkpoint says can bring the plug-in in."""
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_train_help_shows_the_plugins_own_group():
    done = run_module("train", *PLUGIN, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    title = "Max-pooling over frames (an example plug-in) [tests/plugin_max_pool.py; docs/adding-a-method.md]:"
    assert title in done.stdout
    section = done.stdout.split(title, 1)[1].split("\n\n", 1)[0]  # the group's own lines, up to the next group
    assert "--max-pool, --no-max-pool" in section and "--max-pool-agreement" in section
    refused = run_module("train", *PLUGIN, "--train-shards", "x", "--output-dir", "y", "--max-pool", "--interaction", "wti")
    assert refused.returncode == 2 and "--max-pool is its own similarity" in refused.stderr
    missing = run_module("train", "--methods-from", "no_such_module_here", "--train-shards", "x", "--output-dir", "y")
    assert missing.returncode == 2 and "--methods-from no_such_module_here: cannot import it" in missing.stderr


def test_a_method_from_outside_model_trains_evaluates_indexes_and_searches(search_collection, tmp_path, capsys):
    shards, run, index = str(search_collection / "shards"), tmp_path / "run", str(tmp_path / "index")
    assert train_main([*PLUGIN, "--max-pool", "--max-pool-agreement", "0.5", "--train-shards", shards, "--output-dir", str(run),
                       "--model", "tiny-ViT-112", "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", "1", "--max-frames", "8",
                       "--workers", "0", "--lr", "1e-3", "--coef-lr", "1", "--log-every-steps", "1"]) == 0  # fmt: skip
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    config = next(r for r in records if r["kind"] == "config")["config"]
    assert config["methods_from"] == "tests.plugin_max_pool" and config["max_pool"] is True
    steps = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(np.isfinite(r["loss_parts"]["agreement"]) and r["loss_parts"]["agreement"] > 0 for r in steps)

    assert eval_main(["--checkpoint", str(run), "--shards", shards, "--json"]) == 0  # a fresh process below (search) imports it alone
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["raw"]["t2v"]["N"] > 0 and 0 <= metrics["raw"]["t2v"]["R1"] <= 100
    assert "coarse_to_fine" in metrics  # the plug-in's similarity is a fine stage: EERCF's two stages ran on it

    capsys.readouterr()
    assert index_main(["--checkpoint", str(run), "--shards", shards, "--out", index]) == 0
    caption = VideoIndex(index).record(0)["captions"][0]
    searched = run_module("search", "--index", index, caption, "-k", "3", "--json")
    assert searched.returncode == 0, searched.stderr[-2000:]
    answer = json.loads(searched.stdout)
    assert answer["reranked"] > 0 and answer["hits"][0]["stage"] == "fine"

    # the top hit's score is the plug-in's max-pooled cosine, computed here from the index's stored frames
    trained = load_trained_model(str(run))
    assert type(trained.model.similarity).__name__ == "MaxPoolCosine"
    stored = VideoIndex(index)
    row = np.array([answer["hits"][0]["row"]])
    frames, mask = torch.from_numpy(stored.take("frames", row)).float(), torch.from_numpy(stored.take("frame_mask", row))
    with torch.no_grad():
        tokens = tokenizer_for(trained.config.model)([caption], context_length=trained.config.max_words)
        text = F.normalize(trained.model.encode_text(tokens).pooled, dim=-1)[0]
    video = F.normalize(frames[0][mask[0]].max(dim=0).values, dim=-1)  # the channel-wise max over the clip's real frames
    assert abs(float(video @ text) - answer["hits"][0]["score"]) < 1e-3


def test_a_method_that_reuses_a_name_or_an_option_is_refused():
    from dataclasses import dataclass

    import pytest

    from model.methods import registry
    from model.options import option

    @dataclass(kw_only=True)
    class Clashing:
        emcl_bases: int = option(4, "EMCL-Net's option, declared again")

    class ReusesAnOption(registry.Method):
        name, title, reference, options = "reuses-an-option", "t", "r", Clashing

    class ReusesAName(registry.Method):
        name, title, reference = "drl", "t", "r"

    before = [m.name for m in registry.methods()]
    with pytest.raises(registry.MethodError, match=r"options \['emcl_bases'\] are already declared"):
        registry.register(ReusesAnOption)
    with pytest.raises(registry.MethodError, match="two methods named 'drl'"):
        registry.register(ReusesAName)
    assert [m.name for m in registry.methods()] == before
