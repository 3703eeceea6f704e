"""model/cdcr.py against a transcription of DRL's code (foolwood/DRL tvr/models/modeling.py,
``dp_interaction`` and the ``cdcr == 1/2/3`` branches of ``wti_interaction``), on the same
features: padded tokens and frames, negative cosines (so a padded slot's 0 can win a max, as there)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model.cdcr import pooled_cdcr, token_cdcr
from model.features import TokenSet


def drl_dp_cdcr(text_feat, video_feat, alpha1, alpha2):
    """dp_interaction, training branch with cdcr != 0 (text_feat, video_feat: normalised B x D)."""
    z_a_norm = (text_feat - text_feat.mean(0)) / text_feat.std(0)
    z_b_norm = (video_feat - video_feat.mean(0)) / video_feat.std(0)
    B, D = z_a_norm.shape
    c = torch.einsum("bm,bn->mn", z_a_norm, z_b_norm) / B
    on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
    off_diag = c.flatten()[1:].view(D - 1, D + 1)[:, :-1].pow_(2).sum()
    return on_diag * alpha1 + off_diag * alpha2


def drl_token_cdcr(text_feat, video_feat, text_mask, video_mask, text_weight, video_weight, cdcr, alpha1, alpha2):
    """wti_interaction after the weights: text_feat/video_feat raw (normalised here, as there), masks 0/1 floats."""
    text_feat = text_feat / text_feat.norm(dim=-1, keepdim=True)
    video_feat = video_feat / video_feat.norm(dim=-1, keepdim=True)
    retrieve_logits = torch.einsum("atd,bvd->abtv", [text_feat, video_feat])
    retrieve_logits = torch.einsum("abtv,at->abtv", [retrieve_logits, text_mask])
    retrieve_logits = torch.einsum("abtv,bv->abtv", [retrieve_logits, video_mask])
    text_sum = text_mask.sum(-1)
    video_sum = video_mask.sum(-1)
    t2v_logits, max_idx1 = retrieve_logits.max(dim=-1)
    v2t_logits, max_idx2 = retrieve_logits.max(dim=-2)
    if cdcr == 1:
        _text_feat = text_feat[torch.arange(text_feat.shape[0]), torch.randint_like(text_sum, 0, 10000) % text_sum, :]
        _video_feat = video_feat[torch.arange(video_feat.shape[0]), torch.randint_like(video_sum, 0, 10000) % video_sum, :]
        z_a_norm = (_text_feat - _text_feat.mean(0)) / _text_feat.std(0)
        z_b_norm = (_video_feat - _video_feat.mean(0)) / _video_feat.std(0)
        B, D = z_a_norm.shape
        c = torch.einsum("ac,ad->cd", z_a_norm, z_b_norm) / B
    else:
        max_idx1 = max_idx1[torch.arange(max_idx1.shape[0]), torch.arange(max_idx1.shape[1])]
        max_idx2 = max_idx2[torch.arange(max_idx2.shape[0]), torch.arange(max_idx2.shape[1])]
        max_t_feat = text_feat[torch.arange(max_idx2.shape[0]).repeat_interleave(max_idx2.shape[1]), max_idx2.flatten()]
        max_v_feat = video_feat[torch.arange(max_idx1.shape[0]).repeat_interleave(max_idx1.shape[1]), max_idx1.flatten()]
        t_feat = text_feat.reshape(-1, text_feat.shape[-1])
        t_mask = text_mask.flatten().type(torch.bool)
        v_feat = video_feat.reshape(-1, video_feat.shape[-1])
        v_mask = video_mask.flatten().type(torch.bool)
        t_feat = t_feat[t_mask]
        v_feat = v_feat[v_mask]
        max_t_feat = max_t_feat[v_mask]
        max_v_feat = max_v_feat[t_mask]
        z_a_norm = (t_feat - t_feat.mean(0)) / t_feat.std(0)
        z_b_norm = (max_v_feat - max_v_feat.mean(0)) / max_v_feat.std(0)
        x_a_norm = (v_feat - v_feat.mean(0)) / v_feat.std(0)
        x_b_norm = (max_t_feat - max_t_feat.mean(0)) / max_t_feat.std(0)
        if cdcr == 2:
            N, D = z_a_norm.shape
            c1 = torch.einsum("ac,ad->cd", z_a_norm, z_b_norm) / N
            N, D = x_a_norm.shape
            c2 = torch.einsum("ac,ad->cd", x_a_norm, x_b_norm) / N
        else:
            text_weight = text_weight.flatten()[t_mask]
            video_weight = video_weight.flatten()[v_mask]
            N, D = z_a_norm.shape
            B = text_feat.shape[0]
            c1 = torch.einsum("acd,a->cd", torch.einsum("ac,ad->acd", z_a_norm, z_b_norm), text_weight) / B
            c2 = torch.einsum("acd,a->cd", torch.einsum("ac,ad->acd", x_a_norm, x_b_norm), video_weight) / B
        c = (c1 + c2) / 2.0
    on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
    off_diag = c.flatten()[1:].view(D - 1, D + 1)[:, :-1].pow_(2).sum()
    return on_diag * alpha1 + off_diag * alpha2


def token_sets(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens, frames = torch.randn(6, 9, 16, generator=generator), torch.randn(6, 5, 16, generator=generator)
    text_mask = torch.arange(9)[None] < torch.tensor([[9], [4], [6], [3], [9], [5]])
    video_mask = torch.arange(5)[None] < torch.tensor([[5], [2], [5], [3], [1], [4]])
    text_weights = torch.softmax(torch.randn(6, 9, generator=generator).masked_fill(~text_mask, float("-inf")), -1)
    video_weights = torch.softmax(torch.randn(6, 5, generator=generator).masked_fill(~video_mask, float("-inf")), -1)
    text = TokenSet(F.normalize(tokens, dim=-1), text_mask, text_weights)
    video = TokenSet(F.normalize(frames, dim=-1), video_mask, video_weights)
    return tokens, frames, text, video


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_token_cdcr_equals_drls_branch(mode):
    tokens, frames, text, video = token_sets()
    torch.manual_seed(3)
    ours = token_cdcr(text, video, mode, 0.14, 0.06)
    torch.manual_seed(3)  # mode 1 draws the same random token/frame per pair
    theirs = drl_token_cdcr(tokens, frames, text.mask.long(), video.mask.long(), text.weights, video.weights, mode, 0.14, 0.06)
    assert torch.allclose(ours, theirs, rtol=1e-5), (ours, theirs)


def test_pooled_cdcr_equals_drls_dp_branch():
    generator = torch.Generator().manual_seed(1)
    text, video = F.normalize(torch.randn(8, 16, generator=generator), dim=-1), F.normalize(torch.randn(8, 16, generator=generator), dim=-1)
    assert torch.allclose(pooled_cdcr(text, video, 1.0, 0.06), drl_dp_cdcr(text, video, 1.0, 0.06), rtol=1e-5)


def test_cdcr_has_a_finite_gradient_through_padding():
    tokens, frames, text, video = token_sets()
    features = text.features.clone().requires_grad_(True)
    token_cdcr(TokenSet(features, text.mask, text.weights), video, 3, 0.11, 0.0).backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


def test_a_constant_channel_is_uncorrelated_not_nan():
    """Every frame's best token the same (the start token's feature is equal in every caption): DRL
    divides 0 by 0; here the loss stays finite."""
    tokens, frames, text, video = token_sets()
    same = text.features.clone()
    same[:, :, 0] = 0.5  # channel 0 constant over every row
    loss = token_cdcr(TokenSet(same, text.mask, text.weights), video, 2, 1.0, 0.06)
    assert torch.isfinite(loss)
