"""Defaults that depend on where CLIP starts (issue 33): its learning-rate scale, the note in the log,
and the data workers on the machine at hand."""

from __future__ import annotations

import pytest

from train.config import TrainConfig
from train.optim import clip_rate_note
from train.options import MAX_DEFAULT_WORKERS, PRETRAINED_COEF_LR, default_workers


def _config(**options) -> TrainConfig:
    return TrainConfig(train_shards="s", output_dir="o", model="tiny-ViT", **options)


def test_clip_trains_at_the_full_rate_from_random_weights_and_at_clip4clips_scale_from_trained_ones():
    assert _config().resolved_coef_lr() == 1.0
    assert _config(pretrained="ViT-B-32.pt").resolved_coef_lr() == PRETRAINED_COEF_LR == 1e-3
    assert _config(init_from="run/").resolved_coef_lr() == 1e-3
    assert _config(coef_lr=0.5).resolved_coef_lr() == 0.5  # asked for: kept


def test_the_log_says_clips_rate_and_warns_when_random_weights_would_barely_move():
    line, warn = clip_rate_note(_config())
    assert not warn and "random weights" in line and "= 0.0001" in line
    line, warn = clip_rate_note(_config(coef_lr=1e-3))
    assert warn and "--coef-lr" in line and "1e-07" in line
    line, warn = clip_rate_note(_config(pretrained="ViT-B-32.pt"))
    assert not warn and "trained weights" in line


@pytest.mark.parametrize(("cores", "local_ranks", "expected"), [(2, 1, 2), (1, 1, 1), (16, 1, MAX_DEFAULT_WORKERS), (16, 8, 2), (4, 8, 1)])
def test_default_workers_never_exceed_the_cores_a_rank_has(monkeypatch, cores, local_ranks, expected):
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(cores)))
    assert default_workers({"LOCAL_WORLD_SIZE": str(local_ranks)}) == expected
