"""Where each option of a run came from, read from the command line itself (issue 41): a flag given with its
default value is a flag, an omitted one is a default, a default the run resolves says so, and ``--help``
lists no None among the choices."""

from __future__ import annotations

import subprocess
import sys

from eval.card import shown_value
from train.config import parse_config
from train.recipes import effective_options, option_origins

REQUIRED = ["--train-shards", "/data/shards", "--output-dir", "/runs/a"]


def origins(config, recipe_options=None) -> dict[str, tuple]:  # noqa: ANN001
    return {name: (value, origin) for name, value, origin in option_origins(config, recipe_options or {})}


def test_a_flag_given_with_its_default_value_is_a_flag_and_an_omitted_one_a_default():
    config = parse_config([*REQUIRED, "--max-frames", "12", "--lr", "0.0001"])
    table = origins(config)
    assert config.max_frames == 12 and table["max_frames"] == (12, "flag")  # 12 is the default, and the command line said it
    assert table["lr"][1] == "flag" and table["max_words"] == (32, "default") and table["train_shards"][1] == "flag"
    assert "--max-frames 12 (command line)" in effective_options(config, {})


def test_a_resolved_default_is_shown_as_one():
    config = parse_config(REQUIRED)
    assert config.padding_rule is None
    config.padding_rule = config.resolved_padding_rule()  # what the trainer does before it records the options
    value, origin = origins(config)["padding_rule"]
    assert (value, origin) == ("masked", "resolved") and shown_value(value, origin) == "default -> masked"
    assert "--padding-rule masked (default, resolved)" in effective_options(config, {})
    given = parse_config([*REQUIRED, "--padding-rule", "masked"])
    assert origins(given)["padding_rule"] == ("masked", "flag")


def test_a_recipe_value_and_a_flag_that_repeats_it(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('title = "tiny"\nsource = "here"\npublished = "-"\n[options]\nlr = 0.001\nmax_words = 40\n')
    config = parse_config(["--recipe", str(recipe), *REQUIRED, "--max-words", "40"])
    table = origins(config, {"lr": 0.001, "max_words": 40})
    assert table["lr"] == (0.001, "recipe") and table["max_words"] == (40, "flag")  # the same value, but the command line gave it


def test_help_lists_no_none_among_the_choices():
    shown = subprocess.run([sys.executable, "-m", "train", "--help"], capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": ""})
    assert shown.returncode == 0 and "{masked,reference}" in shown.stdout
    assert ",None}" not in shown.stdout and "{None," not in shown.stdout
