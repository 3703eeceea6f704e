"""``--padding-rule reference`` (issue 34): on clips shorter than the frame count and captions shorter
than the word count, each method scores exactly as its own code does, checked against transcriptions
of that code (tests/reference_impl.py, reference_eercf.py, reference_peft.py) on the same weights and
inputs, with padded frames as the reference loaders feed them (zeros after pixel normalisation).
``masked`` stays what the other test files check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from model import backbone
from model.config import ModelConfig
from model.emcl import EMCLNet
from model.factory import assemble_model
from model.foreign_checkpoints import to_reference_layout
from model.interaction import all_pairs
from tests import reference_eercf, reference_peft
from tests.models import clip4clip
from tests.reference_impl import EmclNetReference, drl_ti_scores, drl_wti_scores, emcl_net_logits
from tests.test_peft_methods import build, clips, dgl_state, randomise_trainable, tempme_state
from tests.test_reference_fidelity import WIDTH, perturbed, small_clip

TEXT_MASK = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
FRAME_MASK = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)


def _mixed_sign(shape, seed):
    """Features whose cosines are of both signs, many rows all negative against some partner: where a
    padded 0 wins DRL's max."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator)


def _short_clip_mask(videos: int, frames: int) -> torch.Tensor:
    mask = torch.ones(videos, frames, dtype=torch.bool)
    mask[0, frames // 2 :] = False
    if videos > 1:
        mask[1, 1:] = False  # one real frame
    return mask


@pytest.mark.parametrize("interaction", ["wti", "ti"])
def test_drl_token_interaction_matches_drl_on_padded_clips_and_captions(interaction):
    model = perturbed(clip4clip(small_clip(), "seqTransf", max_frames=5, interaction=interaction, padding_rule="reference"))
    masked = perturbed(clip4clip(small_clip(), "seqTransf", max_frames=5, interaction=interaction))
    text, video = _mixed_sign((3, 6, WIDTH), 4), _mixed_sign((4, 5, WIDTH), 5)
    with torch.no_grad():
        ours = all_pairs(model.similarity.text_side(text, TEXT_MASK), model.similarity.video_side(video, FRAME_MASK))
        ours_masked = all_pairs(masked.similarity.text_side(text, TEXT_MASK), masked.similarity.video_side(video, FRAME_MASK))
        if interaction == "wti":
            theirs = drl_wti_scores(to_reference_layout(model.state_dict(), "drl"), text, TEXT_MASK, video, FRAME_MASK)
        else:
            theirs = drl_ti_scores(text, TEXT_MASK, video, FRAME_MASK)
    print("max abs diff", (ours - theirs).abs().max().item())
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert (ours_masked - theirs).abs().max() > 1e-2  # the rule is what makes the difference: the test can fail


def test_drl_rule_holds_on_every_scoring_path():
    """Training logits, the evaluator's blocks and the two-stage rescoring of candidates all use the rule."""
    model = perturbed(clip4clip(small_clip(), "meanP", max_frames=5, interaction="wti", padding_rule="reference"))
    text, video = _mixed_sign((3, 6, WIDTH), 6), _mixed_sign((4, 5, WIDTH), 7)
    from model.features import TextFeatures, VideoFeatures

    t, v = TextFeatures(text[:, 0], text, TEXT_MASK), VideoFeatures(frames=video, mask=FRAME_MASK, pooled=video.mean(1))
    with torch.no_grad():
        expected = drl_wti_scores(to_reference_layout(model.state_dict(), "drl"), text, TEXT_MASK, video, FRAME_MASK)
        scorer = model.similarity.pair_scorer(t, v)
        torch.testing.assert_close(scorer.block(slice(0, 3), slice(0, 4)), expected, atol=1e-5, rtol=1e-5)
        candidates = torch.tensor([[3, 0], [1, 2], [0, 3]])
        torch.testing.assert_close(scorer.for_texts(torch.arange(3), candidates), expected.gather(1, candidates), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.similarity(t, v, torch.tensor(1.0)).logits, expected, atol=1e-5, rtol=1e-5)


def test_emcl_net_softmax_over_every_frame_then_the_mask():
    generator = torch.Generator().manual_seed(3)
    text = 10 * F.normalize(torch.randn(6, 64, generator=generator), dim=-1)
    frames = 10 * F.normalize(torch.randn(5, 8, 64, generator=generator), dim=-1)
    mask = _short_clip_mask(5, 8)
    ours = EMCLNet(padding_rule="reference").train()
    masked = EMCLNet().train()
    reference = EmclNetReference(ours.mu)
    with torch.no_grad():
        got, got_masked = ours.logits(text, frames, mask), masked.logits(text, frames, mask)
    expected = emcl_net_logits(reference, text, frames, mask, train=True)
    print("max abs diff", (got - expected).abs().max().item())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.mu, reference.mu, atol=1e-7, rtol=0)  # the running bases moved as EMCL-Net's
    assert (got_masked - expected).abs().max() > 1e-3


def test_padded_frames_reach_clip_as_zeros_after_normalisation():
    """What every reference loader feeds: a padded slot is an all-zero tensor after normalisation, so its
    CLIP feature is CLIP's feature of zeros, whatever the slot held."""
    clip = small_clip()
    frames = torch.randint(0, 256, (2, 3, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mask = torch.tensor([[True, False, False], [True, True, True]])
    with torch.no_grad():
        features = backbone.encode_frames(clip, frames, zero_padded=mask)
        zeros = clip.encode_image(torch.zeros(1, 3, 32, 32))
    torch.testing.assert_close(features[0, 1:], zeros.expand(2, -1))
    torch.testing.assert_close(features[1], backbone.encode_frames(clip, frames[1:])[0])


@pytest.fixture(scope="module")
def eercf_models():
    models = []
    for rule in ("reference", "masked"):
        torch.manual_seed(0)
        clip = backbone.load_clip("tiny-ViT", None)
        model = assemble_model(clip, ModelConfig(model="tiny-ViT", sim_header="seqTransf", eercf=True, max_frames=4, padding_rule=rule))
        with torch.no_grad():
            torch.manual_seed(5)
            model.similarity.global_mat_weight.add_(0.05 * torch.randn_like(model.similarity.global_mat_weight))
            model.similarity.frame_logit_weight.add_(0.2 * torch.rand_like(model.similarity.frame_logit_weight))
        models.append(model.eval())
    return models


def test_eercf_frame_and_patch_parts_count_every_frame(eercf_models):
    from tests.test_eercf import inputs, reference_args

    model, masked = eercf_models
    frames, mask, tokens = inputs(5, seed=3)
    mask[0, 2:] = False
    mask[3, 1:] = False
    with torch.no_grad():
        text, video = model.encode_text(tokens), model.encode_video(frames, mask)
        scores = model.similarity(text, video, model.logit_scale())
        fine = model.similarity.pair_scorer(text, video).block(slice(0, 5), slice(0, 5))
        masked_fine = masked.similarity.pair_scorer(text, video).block(slice(0, 5), slice(0, 5))
        tib, _ = reference_eercf.training_outputs(*reference_args(model, text, video))
        v, frame_weak, frame_strong, patch_weak = reference_eercf.eval_similarities(*reference_args(model, text, video))
    expected_fine = (0.5 * v + 0.8 * frame_weak + 0.2 * frame_strong + 0.2 * patch_weak) / model.logit_scale()
    print("max abs diff", (fine - expected_fine).abs().max().item())
    torch.testing.assert_close(fine, expected_fine, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(scores.logits, 0.5 * tib[0] + 0.5 * tib[1] + 0.05 * tib[3], atol=1e-4, rtol=1e-5)
    assert (masked_fine - expected_fine).abs().max() > 1e-3
    # the padded slots reached CLIP as zeros: their frame features are CLIP's feature of a zero image
    zero = model.clip.encode_image(torch.zeros(1, 3, 224, 224))
    torch.testing.assert_close(video.clip_frames[0, 2], zero[0], atol=1e-5, rtol=1e-5)


def _encoder_against_its_code(peft: str, options: dict, mask: torch.Tensor, reference) -> None:  # noqa: ANN001 - reference: (model, base, pixels, mask) -> features
    """A PEFT encoder under ``reference`` on padded clips equals its code's transcription fed the loader's zero
    padding; the same weights under ``masked`` give other features (so the check can fail)."""
    model, base = build(peft, padding_rule="reference", **options)
    randomise_trainable(model)
    frames = clips()
    with torch.no_grad():
        ours = model.encode_video(frames, mask).pooled
        pixels = backbone.normalize_frames(frames.flatten(0, 1)) * mask.reshape(-1, 1, 1, 1)  # the loader's zeros
        expected = F.normalize(reference(model, base, pixels, mask), dim=-1)
        masked_model, _ = build(peft, **options)
        masked_model.load_state_dict(model.state_dict())
        masked = masked_model.encode_video(frames, mask).pooled
    print("max abs diff", (ours - expected).abs().max().item())
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
    assert (masked - expected).abs().max() > 1e-4


def test_tempme_merges_padded_tokens_and_masks_only_the_mean():
    """One padded frame per clip: two padded frames are identical, their tokens tie exactly in the
    bipartite matching, and which of equal tokens merge then follows the sort and the last bit of
    rounding, in TempMe's code as in ours (README: Reproducing a published number)."""
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 11], mask[1, 4] = False, False
    _encoder_against_its_code("tempme", {}, mask, lambda model, base, pixels, mask: reference_peft.tempme_video_features(
        tempme_state(model, base), pixels, mask, heads=2))  # fmt: skip


def test_dgl_global_prompts_attend_to_padded_frames():
    _encoder_against_its_code("dgl", {"dgl_latent": "linear", "dgl_prompt_layers": 12}, _short_clip_mask(2, 12),
                              lambda model, base, pixels, _: reference_peft.dgl_video_feature(dgl_state(model, base), pixels, 12, heads=2,
                                                                                              layers_prompted=12))  # fmt: skip


def test_the_dual_seed_runs_its_encoder_without_a_frame_mask():
    """The seed's encoder is TempMe's merging with DGL's global prompts: under reference it is that
    encoder run on zero-pixel padding with every frame unmasked, pooled over the real frames."""
    model, _ = build("dual", padding_rule="reference")
    randomise_trainable(model)
    frames, mask = clips(), _short_clip_mask(2, 12)
    with torch.no_grad():
        ours = model.encode_video(frames, mask).pooled
        pixels = backbone.normalize_frames(frames, zero_padded=mask)
        per_frame, global_feature = model.adapter.encode_video(model.clip, pixels, torch.ones_like(mask))
        _, pooled = model.pool(per_frame, mask)
        expected = model.adapter.alpha * F.normalize(global_feature, dim=-1) + (1 - model.adapter.alpha) * pooled
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("head", ["meanP", "seqLSTM", "seqTransf", "tightTransf"])
def test_clip4clips_heads_mask_padding_in_their_own_code_so_both_rules_agree(head):
    masked = perturbed(clip4clip(small_clip(), head, max_frames=5))
    reference = perturbed(clip4clip(small_clip(), head, max_frames=5, padding_rule="reference"))
    frames = torch.randint(0, 256, (4, 5, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    tokens = torch.randint(1, 40000, (3, 8), generator=torch.Generator().manual_seed(2))
    tokens[:, 0], tokens[:, 6], tokens[:, 7] = 49406, 49407, 0
    with torch.no_grad():
        scores = [m.logits(m.encode_text(tokens), m.encode_video(frames, FRAME_MASK)) for m in (masked, reference)]
    torch.testing.assert_close(scores[0], scores[1], atol=1e-5, rtol=1e-5)


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="padding-rule"):
        clip4clip(small_clip(), "meanP", padding_rule="zeros")
    assert "--padding-rule must be one of" in ModelConfig(padding_rule="zeros").problem()
