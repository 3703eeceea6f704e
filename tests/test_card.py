"""The results card (issue 35): written at the end of a short CPU run and again by ``python -m eval.card RUN``;
its options carry their origin, the recipe's published numbers sit next to the run's best and last, the plots
are drawn, and the HTML is looked at in Chromium as the search page's browser test does."""

from __future__ import annotations

import json
import re

import pytest

from eval.card import main as card_main
from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from shards.storage import Store
from tests.test_search_browser import ARTIFACTS, browser  # noqa: F401 - the Chromium fixture
from train.__main__ import main as train_main

pytestmark = pytest.mark.integration
RECIPE = '''title = "a test recipe"
source = "tests/test_card.py"
published = "t2v R@1 99.9 (made up for the test)"
requires = []
shards = "python -m pipeline build"
notes = ""
precision_source = "none"

[options]
sim_header = "seqTransf"
lr = 0.002
'''


@pytest.fixture(scope="module")
def run(sample_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    shards = root / "shards"
    build_shards(load_annotations(str(sample_dataset / "annotations.jsonl")), str(sample_dataset / "videos"), Store(str(shards)),
                 ExtractionSettings(short_side=112), BuildOptions(samples_per_shard=3, workers=1, show_progress=False))  # fmt: skip
    (root / "recipe.toml").write_text(RECIPE)
    assert train_main(["--recipe", str(root / "recipe.toml"), "--train-shards", str(shards), "--val-shards", str(shards), "--output-dir",
                       str(root / "run"), "--model", "tiny-ViT-112", "--max-frames", "3", "--batch-size", "4", "--steps-per-epoch", "3",
                       "--epochs", "1", "--workers", "0", "--eval-every-steps", "1", "--keep-best", "t2v/R1", "--log-every-steps", "1"]) == 0  # fmt: skip
    return root / "run"


def test_the_run_writes_its_card_with_origins_numbers_and_plots(run):
    markdown = (run / "card.md").read_text()
    assert "Recipe: **recipe**" in markdown and "t2v R@1 99.9 (made up for the test)" in markdown
    assert "| --lr | 0.002 | recipe |" in markdown and "| --batch-size | 4 | flag |" in markdown and "| --seed | 42 | default |" in markdown
    assert "| --sim-header | seqTransf | recipe |" in markdown and "padding rule: masked" in markdown and "precision: fp32" in markdown
    # origins read from the command line (issue 41): an omitted default the run resolved says so, not "flag"
    assert "| --padding-rule | default -> masked | resolved |" in markdown and "| --max-frames | 3 | flag |" in markdown
    # trained and validated on the same shards: the numbers are marked as fit, in both renderings
    assert "fit, not held-out" in markdown and "id='fit-only'" in (run / "card.html").read_text()
    evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    last_row = next(line for line in markdown.splitlines() if line.startswith("| last (step 3)"))
    assert last_row.split(" | ")[1] == f"{evals[-1]['t2v']['R1']:.1f}"
    best_row = next(line for line in markdown.splitlines() if line.startswith("| best t2v/R1"))
    assert f"(step {best['step']})" in best_row and best_row.split(" | ")[1] == f"{best['value']:.1f}"
    assert {p.name for p in (run / "card").glob("*.png")} == {"loss.png", "learning_rate.png", "logit_scale.png", "validation.png"}
    assert all(p.stat().st_size > 5000 for p in (run / "card").glob("*.png"))
    assert "samples" in markdown and "train:" in markdown  # the manifests' totals


def test_the_card_is_written_again_from_the_run_folder(run, capsys):
    (run / "card.html").unlink()
    assert card_main([str(run)]) == 0
    assert (run / "card.html").exists() and "card.html" in capsys.readouterr().out
    assert card_main([str(run / "nothing")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_a_person_reads_the_card_in_chromium(run, browser):  # noqa: F811 - the fixture
    from selenium.webdriver.common.by import By

    ARTIFACTS.mkdir(exist_ok=True)
    browser.get((run / "card.html").as_uri())
    assert "Results card" in browser.title
    widths = browser.execute_script("return Array.from(document.querySelectorAll('#plots img')).map(i => i.complete ? i.naturalWidth : -1)")
    assert len(widths) == 4 and all(w > 100 for w in widths)  # every plot decoded and drawn
    numbers = browser.find_element(By.ID, "numbers").text
    assert re.search(r"last \(step 3\)", numbers) and "best t2v/R1" in numbers
    assert "made up for the test" in browser.find_element(By.ID, "published").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#options tr.recipe")) == 2
    browser.save_screenshot(str(ARTIFACTS / "results_card.png"))
