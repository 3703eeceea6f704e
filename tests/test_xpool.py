"""X-Pool (model/xpool.py, model/methods/xpool.py) against a transcription of its code (tests/reference_xpool.py):
the same weights and inputs give the same pooled vectors, training similarities, loss and inference scores."""

from __future__ import annotations

import copy

import pytest
import torch

from model.backbone import load_clip
from model.features import TextFeatures, VideoFeatures
from model.similarity import ScoringChunks
from model.xpool import TextConditionedPooling
from tests import reference_xpool
from tests.models import clip4clip
from train.config import TrainConfig
from train.loss import symmetric_cross_entropy
from train.objective import retrieval_loss

WIDTH = 64


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return load_clip("tiny-ViT-112", None)


def xpool_model(clip, heads: int = 2, padding_rule: str | None = None):
    model = clip4clip(copy.deepcopy(clip), "meanP", 6, xpool=True, xpool_heads=heads, xpool_dropout=0.3, padding_rule=padding_rule)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # away from the identity start, so every weight shows
        for parameter in model.similarity.pool.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return model.eval()


def reference_pool(model, heads: int = 2):
    pool = reference_xpool.Transformer(reference_xpool.config(WIDTH, heads, 0.3))
    pool.load_state_dict(reference_xpool.ours_to_reference(model.similarity.pool.state_dict()))
    return pool.eval()


def inputs(texts: int = 6, videos: int = 4, frames: int = 6, seed: int = 0):
    """CLIP features as X-Pool reads them: not normalised."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(texts, WIDTH, generator=generator) * 3, torch.randn(videos, frames, WIDTH, generator=generator) * 3


def test_pooling_similarity_and_loss_are_xpools(tiny_clip):
    model = xpool_model(tiny_clip)
    reference = reference_pool(model)
    text, frames = inputs(texts=5, videos=5)
    mask = torch.ones(frames.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        pooled = model.similarity.pool(text, frames, mask)
        expected = reference(text, frames)
        torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.similarity.pool.pairs(text[[0, 4]], frames[[3, 1]], mask[[3, 1]]), expected[[3, 1], [0, 4]],
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
        sims = reference_xpool.sim_matrix_training(text, expected)
        scale = model.logit_scale()
        scores = model.similarity(TextFeatures(text), VideoFeatures(frames, mask, frames.mean(1)), scale)
        torch.testing.assert_close(scores.logits / scale, sims, atol=1e-5, rtol=1e-5)
        loss = symmetric_cross_entropy(scores.logits.float())
        torch.testing.assert_close(loss, reference_xpool.clip_loss(sims, model.clip.logit_scale), atol=1e-5, rtol=1e-5)


def test_the_objective_of_an_xpool_run_is_its_clip_loss(tiny_clip):
    model = xpool_model(tiny_clip)
    text, frames = inputs(texts=4, videos=4)
    mask = torch.ones(frames.shape[:2], dtype=torch.bool)
    config = TrainConfig(train_shards="-", output_dir="-", xpool=True, xpool_heads=2)
    with torch.no_grad():
        loss, parts = retrieval_loss(model, TextFeatures(text), VideoFeatures(frames, mask, frames.mean(1)), config)
        sims = reference_xpool.sim_matrix_training(text, reference_pool(model)(text, frames))
        torch.testing.assert_close(loss, reference_xpool.clip_loss(sims, model.clip.logit_scale), atol=1e-5, rtol=1e-5)
    assert set(parts) == {"contrastive"}


def test_inference_scores_are_sim_matrix_inference(tiny_clip):
    """X-Pool's test loop: every caption pools every video; scores grouped per video id (2 captions each)."""
    model = xpool_model(tiny_clip)
    text, frames = inputs(texts=8, videos=4)
    mask = torch.ones(frames.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        pooled = reference_pool(model)(text, frames)  # V x T x D
        text_per_video = text.view(4, 2, WIDTH)
        pooled_per_video = pooled.view(4, 4, 2, WIDTH)  # [v, video id j, caption k]
        expected = reference_xpool.sim_matrix_inference(text_per_video, pooled_per_video)  # j, k, v
        pairs = model.similarity.pair_scorer(TextFeatures(text), VideoFeatures(frames, mask, frames.mean(1)), ScoringChunks(3, 3))
        torch.testing.assert_close(pairs.block(slice(0, 8), slice(0, 4)).view(4, 2, 4), expected, atol=1e-5, rtol=1e-5)


def test_padding_rules():
    """masked: padded frames take no attention (a short clip scores the same whatever they hold);
    reference: X-Pool's softmax over every delivered frame, padded ones included."""
    torch.manual_seed(1)
    masked, reference_rule = TextConditionedPooling(WIDTH, 2, 0.0, "masked").eval(), TextConditionedPooling(WIDTH, 2, 0.0, "reference").eval()
    reference_rule.load_state_dict(masked.state_dict())
    text, frames = inputs(texts=3, videos=2)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 3:] = False
    noisy = frames.clone()
    noisy[0, 3:] = torch.randn(3, WIDTH) * 50
    with torch.no_grad():
        torch.testing.assert_close(masked(text, frames, mask), masked(text, noisy, mask))
        torch.testing.assert_close(masked(text, frames, mask)[0], masked(text, frames[:1, :3], mask[:1, :3])[0])
        xpool = reference_xpool.Transformer(reference_xpool.config(WIDTH, 2, 0.0)).eval()
        xpool.load_state_dict(reference_xpool.ours_to_reference(masked.state_dict()))
        torch.testing.assert_close(reference_rule(text, noisy, mask), xpool(text, noisy), atol=1e-5, rtol=1e-5)


def test_a_fresh_pooling_starts_as_xpools_identity():
    pool = TextConditionedPooling(WIDTH, 1)
    xpool = reference_xpool.Transformer(reference_xpool.config(WIDTH, 1))
    assert set(reference_xpool.ours_to_reference(pool.state_dict())) == set(xpool.state_dict())
    for name, value in reference_xpool.ours_to_reference(pool.state_dict()).items():
        torch.testing.assert_close(value, xpool.state_dict()[name], msg=name)


def test_xpool_options_and_rules():
    config = TrainConfig(train_shards="-", output_dir="-", xpool=True)
    assert config.problem() is None and config.resolved_optimizer() == "xpool-adamw"
    assert "--xpool pools CLIP's own frame features" in TrainConfig(train_shards="-", output_dir="-", xpool=True,
                                                                     sim_header="seqTransf").problem()  # fmt: skip
    with pytest.raises(ValueError, match="--xpool-heads 3 must divide"):
        TextConditionedPooling(WIDTH, 3)
