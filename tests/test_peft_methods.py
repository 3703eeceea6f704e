"""TempMe, DGL and the dual-attention seed against independent re-computations of their code
(tests/reference_peft.py), on a 12-layer CPU-sized CLIP with ViT-B/32's token geometry (50
tokens per 224 px frame), so TempMe's schedule runs exactly as on ViT-B/32."""

from __future__ import annotations

import pytest
import torch

from model import backbone
from model.config import ModelConfig
from model.factory import assemble_model
from model.methods.dual_attention import SeedFlags, interpret
from model.peft import count_parameters, load_trainable_state, trainable_state
from model.tempme import MergeSchedule, MergingVideoEncoder
from model.token_merging import TokenGroups, bipartite_matching, join_groups, merge_weighted
from tests import reference_peft

MODEL = "tiny-ViT-12L"
SOT, EOT = 49406, 49407


def build(peft: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    clip = backbone.load_clip(MODEL, None)
    base = {k: v.detach().clone() for k, v in clip.state_dict().items()}
    model = assemble_model(clip, ModelConfig(model=MODEL, pretrained="base.pt", peft=peft, **options)).eval()
    return model, base


def randomise_trainable(model, seed: int = 1) -> None:
    """Trainable parts start at zero (LoRA B, frame embeddings): give them values so the test sees them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)


def clips(videos: int = 2, frames: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (videos, frames, 3, 224, 224), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def captions(count: int = 3, length: int = 16, seed: int = 0) -> torch.Tensor:
    tokens = torch.randint(1, 40000, (count, length), generator=torch.Generator().manual_seed(seed))
    tokens[:, 0] = SOT
    for row, end in enumerate(range(5, 5 + count)):
        tokens[row, end] = EOT
        tokens[row, end + 1 :] = 0
    return tokens


def tempme_state(model, base: dict) -> dict:
    """Our trained parts under TempMe's key names."""
    sd = dict(base)
    for i, block in enumerate(model.clip.visual.transformer.resblocks):
        lora = block.attn.parametrizations.in_proj_weight[0]
        sd[f"visual.transformer.resblocks.{i}.attn.TVPt_LoRA_a"] = lora.lora_a.detach()
        sd[f"visual.transformer.resblocks.{i}.attn.TVPt_LoRA_b"] = lora.lora_b.detach()
    for layer, table in zip((8, 9, 10), model.adapter.frame_positions, strict=True):
        sd[f"visual.transformer.resblocks.{layer}.TVPt_Video_Positional_embedding"] = table.detach()[None, :, None, :]
    return sd


def test_tempme_video_feature_matches_tempme_code():
    model, base = build("tempme")
    randomise_trainable(model)
    frames, mask = clips(), torch.ones(2, 12, dtype=torch.bool)
    with torch.no_grad():
        ours = model.encode_video(frames, mask).pooled
        pixels = backbone.normalize_frames(frames.flatten(0, 1))
        counts: list[int] = []
        reference = reference_peft.tempme_video_features(tempme_state(model, base), pixels, mask, heads=2, counts=counts)
    torch.testing.assert_close(ours, torch.nn.functional.normalize(reference, dim=-1), atol=2e-5, rtol=1e-4)
    # tokens per group after each layer, as TempMe's loop produces them for 12 frames at ViT-B/32 geometry
    assert counts == [48, 46, 44, 42, 40, 38, 36, 34, 44, 56, 107, 97]


def test_tempme_schedule_is_tempmes_rule():
    schedule = MergeSchedule()
    tokens, protected, seen = 50, 1, []
    for layer in range(12):
        plan = schedule.layer_plan(layer, tokens, protected)
        tokens, protected = tokens * plan.join - plan.before, protected * plan.join
        seen.append((plan.join, tokens))
        tokens -= plan.after
    assert seen[8:11] == [(2, 48), (2, 62), (3, 118)]
    assert tokens == 97 and protected == 12
    assert schedule.frames_before_joins(12) == [12, 6, 3]
    assert MergeSchedule(merge_frames=(2, 2, 2)).problem(12, 12)  # 12 / 2 / 2 / 2 is not whole


def test_merging_keeps_mass_and_weighted_sums():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 21, 8, generator=generator)
    mass = torch.rand(3, 21, generator=generator) + 0.5
    groups = TokenGroups(x, mass, protected=2, groups_per_video=1)
    merged = merge_weighted(bipartite_matching(torch.randn(3, 21, 4, generator=generator), mass, 5, 2), groups)
    assert merged.x.shape == (3, 16, 8)
    torch.testing.assert_close(merged.mass.sum(1), mass.sum(1))
    torch.testing.assert_close((merged.x * merged.mass[..., None]).sum(1), (x * mass[..., None]).sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged.x[:, :2], x[:, :2])  # class tokens never merge
    # joining: class tokens of both groups first, then each group's tokens in order
    values = torch.arange(2 * 4).view(2, 4, 1)
    assert join_groups(values, 2, 1).flatten().tolist() == [0, 4, 1, 2, 3, 5, 6, 7]


def test_short_clips_do_not_depend_on_their_padding():
    for peft in ("tempme", "dgl", "dual"):
        model, _ = build(peft, **({"dgl_prompt_layers": 12} if peft == "dgl" else {}))
        randomise_trainable(model)
        mask = torch.ones(2, 12, dtype=torch.bool)
        mask[0, 5:] = False
        mask[1, 1:] = False  # one real frame
        first, second = clips(seed=0), clips(seed=0)
        second[~mask] = clips(seed=9)[~mask]  # other padding content
        with torch.no_grad():
            a, b = model.encode_video(first, mask), model.encode_video(second, mask)
        assert torch.isfinite(a.pooled).all(), peft
        torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-5, msg=peft)
        torch.testing.assert_close(a.frames[mask], b.frames[mask], atol=1e-5, rtol=1e-5, msg=peft)


def dgl_state(model, base: dict) -> dict:
    sd = dict(base)
    generator = model.adapter.generator
    sd["visual_prompt_embedding"] = generator.visual_prompt_embedding.detach()[None]
    for name in ("prefix", "postfix"):
        sd[f"{name}_text_prompt_proj_layer.weight"] = getattr(generator, name).weight.detach()
        sd[f"{name}_text_prompt_proj_layer.bias"] = getattr(generator, name).bias.detach()
    sd["global_prompt_embeddings"] = model.adapter.global_prompts.detach()[None]
    return sd


@pytest.mark.parametrize("prompt_layers", [12, 5])
def test_dgl_video_and_text_features_match_dgl_code(prompt_layers):
    model, base = build("dgl", dgl_latent="linear", dgl_prompt_layers=prompt_layers)  # the transcription is of the linear generator
    frames, mask, tokens = clips(), torch.ones(2, 12, dtype=torch.bool), captions()
    sd = dgl_state(model, base)
    with torch.no_grad():
        ours_video = model.encode_video(frames, mask).pooled
        reference_video = reference_peft.dgl_video_feature(sd, backbone.normalize_frames(frames.flatten(0, 1)), 12, heads=2,
                                                           layers_prompted=prompt_layers)  # fmt: skip
        ours_text = model.adapter.encode_text(model.clip, tokens).pooled
        reference_text = reference_peft.dgl_text_feature(sd, tokens, heads=2, layers_prompted=prompt_layers)
    torch.testing.assert_close(ours_video, torch.nn.functional.normalize(reference_video, dim=-1), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(ours_text, reference_text, atol=2e-5, rtol=1e-4)


def test_trainable_counts_are_the_references_for_vit_b32():
    """Counted from the references' parameter shapes for ViT-B/32 (vision width 768, text 512, 12 layers)."""
    v, t, layers = 768, 512, 12
    tempme = layers * (8 * v + 3 * v * 8) + layers * (8 * t + 3 * t * 8) + (12 + 6 + 3) * v  # LoRA a/b both towers + TVPt positions
    dgl_linear = 4 * layers * v + 2 * (v * t + t) + 4 * v  # visual_prompt_embedding, prefix/postfix projections, global prompts
    assert (tempme, dgl_linear) == (507_648, 827_392)  # TempMe 0.50M, DGL 0.83M as published
    for peft, expected in (("tempme", tempme), ("dgl", dgl_linear), ("dual", tempme + 4 * v)):
        torch.manual_seed(0)
        clip = backbone.load_clip("ViT-B-32-quickgelu", None)
        latent = {"dgl_latent": "linear"} if peft == "dgl" else {}  # DGL's paper's 0.83M model (its script's default is transformer)
        trainable, _ = count_parameters(assemble_model(clip, ModelConfig(model="ViT-B-32-quickgelu", pretrained="x", peft=peft, **latent)))
        assert trainable == expected, peft


def test_seed_segments_are_tempmes_schedule():
    plan = interpret(SeedFlags(), 12, tome_r=2, cross_proportion=0.3, intra_proportion=0.1, frame_pos=True)
    assert plan.schedule.merge_layers == (8, 9, 10) and plan.schedule.merge_frames == (2, 2, 3)
    frames, segments = 12, []
    for factor in plan.schedule.merge_frames:
        frames //= factor
        segments.append(frames)
    assert segments == [6, 3, 1] and plan.prompt_layer == 6 and plan.alpha == 0.4
    for bad in (SeedFlags(seg_num="6-3-2"), SeedFlags(frame_per_seg="2-3-12", seg_num="6-4-1"), SeedFlags(alpha=1.5)):
        with pytest.raises(ValueError):
            interpret(bad, 12, 2, 0.3, 0.1, True)


def test_seed_score_is_alpha_mix_of_global_and_frame_cosines():
    model, _ = build("dual")
    randomise_trainable(model)
    frames, mask = clips(), torch.ones(2, 12, dtype=torch.bool)
    with torch.no_grad():
        video = model.encode_video(frames, mask)
        pixels = backbone.normalize_frames(frames)
        frame_features, global_feature = model.adapter.encode_video(model.clip, pixels, mask)
        text = model.encode_text(captions())
    frame_vector = torch.nn.functional.normalize(torch.nn.functional.normalize(frame_features, dim=-1).mean(1), dim=-1)
    expected = 0.4 * text.pooled @ torch.nn.functional.normalize(global_feature, dim=-1).T + 0.6 * text.pooled @ frame_vector.T
    torch.testing.assert_close(text.pooled @ video.pooled.T, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("peft", ["tempme", "dgl", "dual"])
def test_checkpoint_holds_only_the_trainable_part(peft):
    model, _ = build(peft)
    randomise_trainable(model, seed=3)
    state = trainable_state(model)
    parameters = dict(model.named_parameters())
    assert {name for name, p in parameters.items() if p.requires_grad} <= set(state)
    assert not [key for key in state if key in parameters and not parameters[key].requires_grad]  # no frozen weight saved
    restored, _ = build(peft)  # the same frozen base, fresh trainable part
    load_trainable_state(restored, state)
    frames, mask = clips(1), torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(restored.encode_video(frames, mask).pooled, model.encode_video(frames, mask).pooled)
        tokens = captions()
        torch.testing.assert_close(restored.encode_text(tokens).pooled, model.encode_text(tokens).pooled)


def test_merging_encoder_without_merging_is_clips_frame_encoder():
    """No tokens merged and no frames joined: exactly CLIP's own per-frame forward (the block-by-block
    run, proportional attention with unit masses, changes nothing)."""
    torch.manual_seed(0)
    clip = backbone.load_clip(MODEL, None).eval()
    idle = MergeSchedule(tome_r=0, merge_layers=(5,), merge_frames=(1,), cross_proportion=0, intra_proportion=0)
    encoder = MergingVideoEncoder(clip, idle, 4)
    frames = clips(frames=4)
    with torch.no_grad():
        ours, global_feature = encoder.encode_video(clip, backbone.normalize_frames(frames), torch.ones(2, 4, dtype=torch.bool))
        torch.testing.assert_close(ours, backbone.encode_frames(clip, frames), atol=1e-6, rtol=1e-6)
    assert global_feature is None


def test_every_dgl_latent_choice_builds_and_no_other_does():
    from model.dgl import DGLEncoder
    from model.methods.dgl import DGL_LATENTS

    clip = backbone.load_clip(MODEL, None)
    for latent in DGL_LATENTS:
        assert DGLEncoder(clip, latent, 4, prompt_layers=2).generator is not None
    with pytest.raises(ValueError, match="--dgl-latent must be linear or transformer"):
        DGLEncoder(clip, "mlp", 4, prompt_layers=2)
