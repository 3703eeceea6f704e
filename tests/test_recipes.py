"""``python -m train --recipe NAME``: every recipe under recipes/ parses into a valid configuration,
names its source, and command-line flags override it; bad recipe files are named with the cause."""

from __future__ import annotations

import pytest

from train.config import TrainConfig, config_problem, parse_config
from train.recipes import RECIPES_DIR, load_recipe, recipe_names

BASE = ["--train-shards", "shards/", "--output-dir", "run/", "--pretrained", "ViT-B-32.pt"]


def test_recipes_exist_for_each_seed_family():
    names = recipe_names()
    for prefix in ("clip4clip-msrvtt-", "clip4clip-msvd-", "clip4clip-lsmdc-", "clip4clip-activitynet-", "clip4clip-didemo-", "drl-msrvtt-",
                   "emcl-", "eercf-", "dgl-", "tempme-", "dual-attention-"):  # fmt: skip
        assert any(name.startswith(prefix) for name in names), prefix


@pytest.mark.parametrize("name", recipe_names())
def test_each_recipe_gives_a_valid_config_and_names_its_source(name):
    recipe = load_recipe(name, TrainConfig)
    assert recipe.source and recipe.title and recipe.published
    config = parse_config(["--recipe", name, *BASE])
    assert config.recipe == name and config_problem(config) is None
    for key, value in recipe.options.items():
        assert getattr(config, key) == value, key


def test_the_command_line_overrides_the_recipe():
    config = parse_config(["--recipe", "drl-msrvtt-wti-cdcr", *BASE, "--lr", "3e-4", "--batch-size", "64"])
    assert (config.lr, config.batch_size, config.cdcr, config.cdcr_alpha1) == (3e-4, 64, 3, 0.14)


def test_a_recipe_needing_weights_says_so(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--recipe", "clip4clip-msrvtt-meanP", "--train-shards", "s/", "--output-dir", "r/"])
    assert "needs --pretrained" in capsys.readouterr().err


@pytest.mark.parametrize("content, cause", [("[options]\nlearning_rate = 1e-4\n", "learning_rate is not a training option"),
                                            ("[options]\nlr = 'fast'\n", "should be a float"), ("title = \n", "not valid TOML"),
                                            ("speed = 1\n", "unknown entries")])  # fmt: skip
def test_a_bad_recipe_file_is_named_with_its_cause(tmp_path, capsys, content, cause):
    path = tmp_path / "mine.toml"
    path.write_text(content)
    with pytest.raises(SystemExit):
        parse_config(["--recipe", str(path), *BASE])
    err = capsys.readouterr().err
    assert "mine.toml" in err and cause in err


def test_an_unknown_recipe_lists_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--recipe", "clip4clip-msrvtt-meanp", *BASE])
    assert "clip4clip-msrvtt-meanP" in capsys.readouterr().err


def test_recipe_files_are_where_the_loader_looks():
    assert RECIPES_DIR.is_dir() and len(list(RECIPES_DIR.glob("*.toml"))) == len(recipe_names()) >= 20


def test_every_recipe_says_how_to_reach_its_global_batch_on_1_2_4_and_8_gpus():
    from train.recipes import accumulation_lines, accumulation_plan, recipe_names

    for name in recipe_names():
        recipe = load_recipe(name, TrainConfig)
        published = recipe.options["batch_size"]
        for gpus in (1, 2, 4, 8):
            if published % gpus:
                continue
            batch, accum = accumulation_plan(published, gpus)
            assert batch * accum == published and batch % gpus == 0 and batch // gpus <= 32, (name, gpus)
        assert accumulation_lines(published)[0].startswith("1 GPU: python -m train")
    assert accumulation_plan(128, 1) == (32, 4) and accumulation_plan(128, 4) == (128, 1) and accumulation_plan(512, 8) == (256, 2)
