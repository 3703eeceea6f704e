"""T-MASS (model/tmass.py, model/methods/tmass.py) against a transcription of its code (tests/reference_tmass.py):
the same weights, inputs and draws give the same training loss (support text included) and the same
inference scores (best of the trials per caption and video)."""

from __future__ import annotations

import copy

import pytest
import torch

from model.backbone import load_clip
from model.features import TextFeatures, VideoFeatures
from model.similarity import ScoringChunks
from model.tmass import CosineRadius, TMASSSimilarity
from tests import reference_tmass, reference_xpool
from tests.models import clip4clip
from train.config import TrainConfig
from train.objective import retrieval_loss

WIDTH, FRAMES = 64, 6


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return load_clip("tiny-ViT-112", None)


def tmass_model(clip, support: float = 0.8, prior: str = "uniform01", trials: int = 5, padding_rule: str | None = None):
    model = clip4clip(copy.deepcopy(clip), "meanP", FRAMES, tmass=True, tmass_support_weight=support, tmass_prior=prior,
                      tmass_prior_std=0.5, tmass_trials=trials, tmass_seed=7, padding_rule=padding_rule)  # fmt: skip
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # away from the identity start, so every weight shows
        for parameter in model.similarity.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


def reference_modules(model, prior: str = "uniform01"):
    pool = reference_xpool.Transformer(reference_xpool.config(WIDTH, 1, 0.3))
    pool.load_state_dict(reference_xpool.ours_to_reference(model.similarity.pool.state_dict()))
    stochastic = reference_tmass.StochasticText(reference_tmass.config(FRAMES, WIDTH, prior, 0.5))
    stochastic.std_branch.load_state_dict(model.similarity.radius.state_dict())
    return pool, stochastic


def inputs(texts: int = 5, videos: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(texts, WIDTH, generator=generator) * 3, torch.randn(videos, FRAMES, WIDTH, generator=generator) * 3


@pytest.mark.parametrize("prior", ["uniform01", "normal"])
def test_training_loss_is_tmass_support_text_included(tiny_clip, prior):
    """Train mode: the pooling's dropout and the text's draw come from the same generator in the same order."""
    model = tmass_model(tiny_clip, prior=prior).train()
    pool, stochastic = reference_modules(model, prior)
    pool.train()
    text, frames = inputs()
    mask = torch.ones(5, FRAMES, dtype=torch.bool)
    config = TrainConfig(train_shards="-", output_dir="-", max_frames=FRAMES, tmass=True, tmass_support_weight=0.8, tmass_prior=prior,
                         tmass_prior_std=0.5)  # fmt: skip
    torch.manual_seed(11)
    loss, parts = retrieval_loss(model, TextFeatures(text), VideoFeatures(frames, mask, frames.mean(1)), config)
    torch.manual_seed(11)
    expected, sims, support_sims = reference_tmass.training_loss(pool, stochastic, text, frames, model.clip.logit_scale, 0.8)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    assert set(parts) == {"contrastive", "support"}


def test_inference_is_the_best_of_its_trials(tiny_clip):
    model = tmass_model(tiny_clip).eval()
    pool, stochastic = reference_modules(model)
    pool.eval()
    text, frames = inputs(texts=7, videos=4)
    mask = torch.ones(4, FRAMES, dtype=torch.bool)
    with torch.no_grad():
        pairs = model.similarity.pair_scorer(TextFeatures(text), VideoFeatures(frames, mask, frames.mean(1)), ScoringChunks(3, 2))
        sigmas = model.similarity.draw((5, 7, WIDTH), torch.Generator().manual_seed(7), like=text)  # the seeded draws it used
        expected = reference_tmass.inference_sims(pool, stochastic, text, frames, sigmas)
        scores = pairs.block(slice(0, 7), slice(0, 4))
        torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(pairs.for_texts(torch.tensor([0, 6]), torch.tensor([[3, 1], [0, 0]])), scores[[[0, 0], [6, 6]], [[3, 1], [0, 0]]])
        torch.testing.assert_close(pairs.for_videos(torch.tensor([2]), torch.tensor([[5, 1, 4]])), scores[[5, 1, 4], 2][None])
        again = model.similarity.pair_scorer(TextFeatures(text), VideoFeatures(frames, mask, frames.mean(1)), ScoringChunks(3, 2))
        again = again.block(slice(0, 7), slice(0, 4))
        assert torch.equal(again, scores)  # seeded: an evaluation repeats exactly
        model.similarity.seed = 8
        other = model.similarity.pair_scorer(TextFeatures(text), VideoFeatures(frames, mask, frames.mean(1))).block(slice(0, 7), slice(0, 4))
        assert not torch.equal(other, scores)


def test_padding_rules_of_the_radius():
    masked, reference_rule = CosineRadius(FRAMES, WIDTH, "masked"), CosineRadius(FRAMES, WIDTH, "reference")
    with torch.no_grad():
        masked.linear_proj.weight.normal_()
    reference_rule.load_state_dict(masked.state_dict())
    text, frames = inputs(texts=2, videos=2)
    mask = torch.ones(2, FRAMES, dtype=torch.bool)
    mask[0, 4:] = False
    noisy = frames.clone()
    noisy[0, 4:] = torch.randn(2, WIDTH) * 40
    with torch.no_grad():
        torch.testing.assert_close(masked.all_pairs(text, frames, mask), masked.all_pairs(text, noisy, mask))
        torch.testing.assert_close(masked.paired(text, frames, mask), masked.all_pairs(text, frames, mask).diagonal().T)
        radius = reference_tmass.LinearCosRadius(reference_tmass.config(FRAMES, WIDTH))
        radius.load_state_dict(reference_rule.state_dict())
        torch.testing.assert_close(reference_rule.paired(text, noisy, mask), radius(text, noisy), atol=1e-5, rtol=1e-5)


def test_tmass_options_and_rules():
    config = TrainConfig(train_shards="-", output_dir="-", tmass=True)
    assert config.problem() is None and config.resolved_optimizer() == "xpool-adamw"
    both = TrainConfig(train_shards="-", output_dir="-", tmass=True, xpool=True)
    assert "drop --xpool" in both.problem()
    with pytest.raises(ValueError, match="--tmass-prior must be uniform01 or normal"):
        TMASSSimilarity(WIDTH, FRAMES, prior="beta")
