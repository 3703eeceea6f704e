"""EMCL as EMCL-Net computes it, step by step against tests/reference_impl.py (written from
jpthu17/EMCL ``until_module.py`` Emcl and ``modeling.py`` get_logits), and bases that stay diverse."""

import pytest
import torch
import torch.nn.functional as F

from model.emcl import EMCLNet
from tests.reference_impl import EmclNetReference, emcl_net_logits

WIDTH, FRAMES = 512, 12


def clip_like_batch(step: int, size: int = 16, centres: int = 200):
    """Captions and frames around shared centres with CLIP-like norms (~10); full clips."""
    generator = torch.Generator().manual_seed(step)
    means = torch.randn(centres, WIDTH, generator=torch.Generator().manual_seed(12345))
    ids = torch.randperm(centres, generator=generator)[:size]
    frames = 10 * F.normalize(means[ids][:, None] + 0.5 * torch.randn(size, FRAMES, WIDTH, generator=generator), dim=-1)
    text = 10 * F.normalize(means[ids] + 0.5 * torch.randn(size, WIDTH, generator=generator), dim=-1)
    return text, frames, torch.ones(size, FRAMES, dtype=torch.bool)


def test_training_blocks_and_running_state_match_emcl_net():
    ours = EMCLNet().train()
    reference = EmclNetReference(ours.mu)
    for step in range(4):  # the running state carries over: later blocks start from it
        text, frames, mask = clip_like_batch(step, size=8 + step)
        with torch.no_grad():
            got = ours.logits(text, frames, mask)
        expected = emcl_net_logits(reference, text, frames, mask, train=True)
        assert torch.allclose(got, expected, atol=1e-5), (step, (got - expected).abs().max())
        assert torch.allclose(ours.mu, reference.mu, atol=1e-7)
    assert ours.mu.shape == (1, 32)


def test_test_time_blocks_match_emcl_net_and_leave_the_state_alone():
    ours = EMCLNet().train()
    for step in range(3):
        ours.logits(*clip_like_batch(step))
    ours.eval()
    before = ours.mu.clone()
    text, frames, mask = clip_like_batch(50, size=70)
    with torch.no_grad():
        got = ours.blockwise(text, frames, mask)
    reference = EmclNetReference(before)
    expected = torch.cat([torch.cat([emcl_net_logits(reference, text[a : a + 32], frames[b : b + 32], mask[b : b + 32], train=False)
                                     for b in range(0, 70, 32)], dim=1) for a in range(0, 70, 32)])  # fmt: skip
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(ours.mu, before)


@pytest.mark.integration  # hundreds of optimisation steps
def test_bases_stay_diverse_and_matches_stay_apart_over_many_steps():
    """The pre-EMCL-Net version collapsed its bases (mean pairwise cosine 1.000 after 50 steps)
    and shrank the matched-minus-unmatched margin ~14x; EMCL-Net's EM does neither."""
    model = EMCLNet().train()
    for step in range(50):
        model.logits(*clip_like_batch(step, size=32))
    model.eval()
    text, frames, mask = clip_like_batch(999, size=32)
    rows = torch.cat([model.pool(text, frames, mask).reshape(-1, WIDTH), text])
    bases, _ = model.expectation_maximisation(rows)
    cosines = F.normalize(bases, dim=0).T @ F.normalize(bases, dim=0)
    count = cosines.shape[0]
    assert (cosines.abs().sum() - count) / (count * count - count) < 0.5  # measured 0.11
    with torch.no_grad():
        scores = model.logits(text, frames, mask)
        plain = (F.normalize(text, dim=-1)[:, None] * F.normalize(model.pool(text, frames, mask), dim=-1)).sum(-1)
    matched = torch.eye(32, dtype=torch.bool)
    margin, plain_margin = scores[matched].mean() - scores[~matched].mean(), plain[matched].mean() - plain[~matched].mean()
    assert margin > 0.8 * plain_margin  # measured 1.0x


def test_padded_frames_take_no_weight():
    """The one deliberate difference (README): EMCL-Net multiplies the mask in after the softmax."""
    model = EMCLNet().eval()
    text, frames, mask = clip_like_batch(3, size=4)
    mask[0, 5:] = False
    altered = frames.clone()
    altered[~mask] = 100 * torch.randn(int((~mask).sum()), WIDTH)
    with torch.no_grad():
        assert torch.allclose(model.logits(text, frames, mask), model.logits(text, altered, mask), atol=1e-5)
