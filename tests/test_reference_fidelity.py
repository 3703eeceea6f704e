"""The model computes what the reference code computes, with the same weights and inputs.

Each head or similarity that reproduces a reference is compared with an independent
computation written from that reference (tests/reference_impl.py), fed with this model's
weights renamed into the reference's own key layout. The same renaming is what loads the
references' released checkpoints, so those are covered here too: a file written in each
layout loads back with identical scores, and what cannot be mapped is refused by name.
"""

import json

import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from model import backbone
from model.clip4clip import CLIP4Clip
from model.eercf import EERCFWeights
from model.features import TextFeatures, VideoFeatures
from model.foreign_checkpoints import ForeignCheckpointError, load_any_checkpoint, to_reference_layout
from model.frame_rule import FrameRule, ShardSettingsError, frame_rule_for
from model.interaction import all_pairs
from model.restore import restore_model
from tests.models import clip4clip
from tests.reference_impl import clip4clip_seq_transf_visual, clip4clip_tight_scores, drl_wti_scores
from train.config import parse_config
from train.setup import build_model

WIDTH = 128  # two attention heads of 64, as CLIP4Clip's width // 64 rule gives


def small_clip(quick_gelu: bool = True, seed: int = 0) -> CLIP:
    """A CLIP whose text width equals its embedding width (as ViT-B/32's), so CLIP4Clip's
    initialisation from text layers applies; 2 heads so head splitting is exercised."""
    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=1, width=64, head_width=64, patch_size=16, image_size=32)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=WIDTH, heads=2, layers=4)
    return CLIP(embed_dim=WIDTH, vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu).float()


def perturbed(model: CLIP4Clip, seed: int = 1) -> CLIP4Clip:
    """Every weight moved off its initial value (zero biases, unit norms, copies of CLIP's
    layers), so agreement cannot come from the initialisation alone."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def frames_and_mask(videos: int = 4, count: int = 5, seed: int = 2):
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(videos, count, WIDTH, generator=generator)
    mask = torch.ones(videos, count, dtype=torch.bool)
    mask[0, 2:] = False
    mask[1, 4:] = False
    return frames, mask


def test_tight_transf_scores_as_clip4clip_cross_similarity():
    model = perturbed(clip4clip(small_clip(), "tightTransf", max_frames=5))
    reference_state = to_reference_layout(model.state_dict(), "clip4clip")
    frames, mask = frames_and_mask()
    text = torch.randn(3, WIDTH, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model.logits(TextFeatures(text), VideoFeatures(frames, mask, None))
        theirs = clip4clip_tight_scores(reference_state, text, frames, mask)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_seq_transf_pools_as_clip4clip_loose_similarity():
    model = perturbed(clip4clip(small_clip(), "seqTransf", max_frames=5))
    reference_state = to_reference_layout(model.state_dict(), "clip4clip")
    frames, mask = frames_and_mask()
    with torch.no_grad():
        ours = model.pool(frames, mask)[1]
        theirs = clip4clip_seq_transf_visual(reference_state, frames, mask)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_cross_encoder_starts_as_clip4clip_initialises_it():
    """QuickGELU blocks copied from CLIP's text layers 0-3, positions from CLIP's, even when
    CLIP itself was built with GELU; pooler and score head from CLIP4Clip's init_weights."""
    clip = small_clip(quick_gelu=False)
    model = clip4clip(clip, "tightTransf", max_frames=12)
    for index, block in enumerate(model.similarity.blocks):
        assert type(block.mlp.gelu).__name__ == "QuickGELU"
        assert block.ln_1.eps == 1e-12
        text_block = clip.transformer.resblocks[index].state_dict()
        assert all(torch.equal(value, text_block[name]) for name, value in block.state_dict().items())
    assert torch.equal(model.similarity.position.weight, clip.positional_embedding)
    assert torch.equal(model.similarity.pool_norm.weight, torch.ones(WIDTH)) and not model.similarity.pool_norm.bias.any()
    assert not model.similarity.score.bias.any() and 0.01 < model.similarity.score.weight.std() < 0.03
    seq = clip4clip(small_clip(quick_gelu=False), "seqTransf", max_frames=12)
    assert all(type(block.mlp.gelu).__name__ == "QuickGELU" for block in seq.pool.blocks)
    with pytest.raises(ValueError, match="positions"):
        clip4clip(small_clip(), "tightTransf", max_frames=77)  # 1 caption + 77 frames > 77 positions


def _positive_features(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) + 0.1


def test_wti_matches_drl_where_drl_is_well_defined():
    model = perturbed(clip4clip(small_clip(), "seqTransf", max_frames=5, interaction="wti"))
    assert model.similarity.text_weights.mlp[0].weight.shape == (WIDTH, WIDTH)  # DRL's wti_arch 2: Linear(D, D)
    reference_state = to_reference_layout(model.state_dict(), "drl")
    text = _positive_features((3, 6, WIDTH), 4)  # all cosines positive: DRL's zeroed padding never wins a max
    text_mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    video = _positive_features((4, 5, WIDTH), 5)
    _, video_mask = frames_and_mask()
    with torch.no_grad():
        ours = all_pairs(model.similarity.text_side(text, text_mask), model.similarity.video_side(video, video_mask))
        theirs = drl_wti_scores(reference_state, text, text_mask, video, video_mask)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_wti_padding_rule_is_the_documented_difference_from_drl():
    """DRL multiplies cosines by the mask, so a padded frame scores 0 and beats real frames
    whose cosines are all negative; this project never lets padding win (README says so)."""
    model = perturbed(clip4clip(small_clip(), "meanP", max_frames=3, interaction="wti"))
    reference_state = to_reference_layout(model.state_dict(), "drl")
    text = _positive_features((1, 2, WIDTH), 6)
    text_mask = torch.ones(1, 2, dtype=torch.bool)
    real = -_positive_features((1, 2, WIDTH), 7)  # every real cosine negative
    padded = torch.cat([real, torch.randn(1, 1, WIDTH)], dim=1)
    padded_mask = torch.tensor([[True, True, False]])
    with torch.no_grad():
        ours_padded = all_pairs(model.similarity.text_side(text, text_mask), model.similarity.video_side(padded, padded_mask))
        ours_unpadded = all_pairs(
            model.similarity.text_side(text, text_mask), model.similarity.video_side(real, torch.ones(1, 2, dtype=torch.bool))
        )
        drl_padded = drl_wti_scores(reference_state, text, text_mask, padded, padded_mask)
        drl_unpadded = drl_wti_scores(reference_state, text, text_mask, real, torch.ones(1, 2, dtype=torch.bool))
    assert torch.allclose(ours_padded, ours_unpadded, atol=1e-6) and torch.allclose(drl_unpadded, ours_unpadded, atol=1e-5)
    assert drl_padded.item() > drl_unpadded.item() + 0.01  # padding changed DRL's score


# ---- released checkpoints of the reference codebases ----

CASES = {
    "clip4clip-meanP": ("clip4clip", dict(head="meanP")),
    "clip4clip-seqLSTM": ("clip4clip", dict(head="seqLSTM")),
    "clip4clip-seqTransf": ("clip4clip", dict(head="seqTransf")),
    "clip4clip-tightTransf": ("clip4clip", dict(head="tightTransf")),
    "drl-seqTransf-wti": ("drl", dict(head="seqTransf", interaction="wti")),
    "drl-meanP-ti": ("drl", dict(head="meanP", interaction="ti")),
    "emcl-seqTransf": ("emcl", dict(head="seqTransf", emcl={"bases": 32})),
    "eercf-seqTransf": ("eercf", dict(head="seqTransf", eercf=EERCFWeights())),
}
AMBIGUOUS = {"clip4clip-meanP", "clip4clip-seqLSTM", "clip4clip-seqTransf", "drl-meanP-ti", "emcl-seqTransf"}


def _scores(model: CLIP4Clip, frames: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        video, text = model.encode_video(frames, mask), model.encode_text(tokens)
        return model.logits(text, video)


def reference_file(tmp_path, name: str, model: CLIP4Clip) -> str:
    """The model saved as the reference saves it: ``torch.save(model.state_dict(), 'pytorch_model.bin.N')``."""
    checkpoint_format, options = CASES[name]
    state = to_reference_layout(model.state_dict(), checkpoint_format)
    if options["head"] == "seqLSTM":  # CLIP4Clip builds (and saves) a frame position table it never reads for seqLSTM
        state["frame_position_embeddings.weight"] = torch.randn(77, WIDTH)
    path = tmp_path / f"{name}.pytorch_model.bin.2"
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("name", CASES)
def test_reference_checkpoint_loads_with_identical_scores(tmp_path, name):
    checkpoint_format, options = CASES[name]
    model = perturbed(clip4clip(small_clip(), options["head"], 12, options.get("interaction", "cosine"), options.get("emcl"),
                                options.get("eercf")))  # fmt: skip
    path = reference_file(tmp_path, name, model)
    state = load_any_checkpoint(path, checkpoint_format if name in AMBIGUOUS else "auto")
    restored, config = restore_model(state)
    assert (config.sim_header, config.interaction, config.emcl) == (
        options["head"],
        options.get("interaction", "cosine"),
        "emcl" in options,
    )
    assert config.eercf == ("eercf" in options)
    generator = torch.Generator().manual_seed(8)
    frames = torch.randint(0, 256, (3, 12, 3, 32, 32), dtype=torch.uint8, generator=generator)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 5:] = False
    tokens = backbone.tokenizer_for(None)(["a red circle moves left", "a blue square", "two shapes"], context_length=32)
    # an imported file runs under its code's padding rule (model/padding.py): the same weights under that rule score alike
    assert config.padding_rule == "reference"
    as_its_code = clip4clip(small_clip(), options["head"], 12, options.get("interaction", "cosine"), options.get("emcl"), options.get("eercf"),
                            padding_rule="reference").eval()  # fmt: skip
    as_its_code.load_state_dict(model.state_dict())
    assert torch.allclose(_scores(as_its_code, frames, mask, tokens), _scores(restored, frames, mask, tokens), atol=1e-5)
    if name in AMBIGUOUS:
        with pytest.raises(ForeignCheckpointError, match="--checkpoint-format"):
            load_any_checkpoint(path)


def test_unmappable_reference_checkpoints_are_refused_by_name(tmp_path):
    model = perturbed(clip4clip(small_clip(), "seqTransf", 12))
    state = to_reference_layout(model.state_dict(), "clip4clip")
    extra = tmp_path / "extra.bin"
    torch.save({**state, "some_new_module.weight": torch.ones(3)}, extra)
    with pytest.raises(ForeignCheckpointError, match="some_new_module.weight"):
        load_any_checkpoint(str(extra), "clip4clip")
    missing = tmp_path / "missing.bin"
    torch.save({k: v for k, v in state.items() if not k.startswith("transformerClip.resblocks.3.")}, missing)
    with pytest.raises(ForeignCheckpointError, match=r"pool\.blocks\.3"):
        load_any_checkpoint(str(missing), "clip4clip")
    eercf = tmp_path / "eercf.bin"  # EERCF's keys with one of its two matrices missing
    torch.save({**state, "global_mat_weight": torch.eye(WIDTH)}, eercf)
    with pytest.raises(ForeignCheckpointError, match="frame_logit_weight"):
        load_any_checkpoint(str(eercf))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(ForeignCheckpointError, match="junk.bin"):
        load_any_checkpoint(str(junk))


# ---- OpenAI weights build the network OpenAI trained ----


@pytest.fixture(scope="module")
def openai_file(tmp_path_factory):
    """A TorchScript archive in OpenAI's key layout, as ViT-B-32.pt is (saved from a GELU build:
    the file carries no activation, so only the loader can get it right)."""
    path = tmp_path_factory.mktemp("openai") / "tiny-openai.pt"
    torch.jit.script(small_clip(quick_gelu=False).eval()).save(str(path))
    return str(path)


def test_readme_training_command_builds_quickgelu_from_an_openai_file(openai_file, tmp_path, capsys):
    # exactly the README's flags: --pretrained FILE and no --model
    config = parse_config(["--train-shards", str(tmp_path), "--output-dir", str(tmp_path / "run"), "--pretrained", openai_file])
    built = build_model(config).clip.eval()
    state = {k: v for k, v in torch.jit.load(openai_file).state_dict().items() if k != "attn_mask"}
    explicit = small_clip(quick_gelu=True).eval()
    explicit.load_state_dict(state)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    tokens = backbone.tokenizer_for(None)(["a red circle", "a blue square moves"])
    with torch.no_grad():
        assert torch.allclose(built.encode_image(images), explicit.encode_image(images), atol=1e-5)
        assert torch.allclose(built.encode_text(tokens), explicit.encode_text(tokens), atol=1e-5)
        gelu = small_clip(quick_gelu=False).eval()
        gelu.load_state_dict(state)
        assert not torch.allclose(built.encode_image(images), gelu.encode_image(images), atol=1e-3)  # the silent error
    assert backbone.activation_name(built) == "QuickGELU"
    assert "activation QuickGELU" in backbone.describe_backbone(built)


def test_model_name_contradicting_an_openai_file_is_refused(openai_file):
    with pytest.raises(backbone.BackboneLoadError, match=r"--model ViT-B-32 contradicts .*tiny-openai.pt"):
        backbone.load_clip("ViT-B-32", openai_file)
    with pytest.raises(backbone.BackboneLoadError, match="QuickGELU"):
        backbone.load_clip(None, openai_file, activation="gelu")


def test_model_name_restating_an_openai_file_still_gets_quickgelu(tmp_path):
    """tiny-ViT's own open_clip config matches its file; the file still decides the activation."""
    import open_clip

    reference = open_clip.create_model("tiny-ViT")
    path = tmp_path / "tiny.pt"
    torch.save(reference.state_dict(), path)
    assert backbone.activation_name(backbone.load_clip("tiny-ViT", str(path))) == "QuickGELU"
    assert backbone.activation_name(backbone.load_clip("tiny-ViT", str(path), activation="gelu")) == "GELU"  # LAION-style state dict


# ---- frames chosen as the builder chose them ----


def _sample_with_frames(count: int) -> dict:
    return {"__key__": "clip", **{f"{i:02d}.jpg": bytes([i]) for i in range(count)}}


def test_frame_rule_spreads_frames_like_clip4clip_slice_framepos_2():
    sample = _sample_with_frames(12)
    assert FrameRule(8).members(sample) == [f"{i:02d}.jpg" for i in (0, 1, 3, 4, 6, 7, 9, 11)]  # np.linspace(0, 11, 8) as int
    assert FrameRule(8, "head").members(sample) == [f"{i:02d}.jpg" for i in range(8)]
    assert FrameRule(12).members(_sample_with_frames(5)) == [f"{i:02d}.jpg" for i in range(5)]


def _fake_build(tmp_path, **settings) -> str:
    folder = tmp_path / "build"
    folder.mkdir()
    base = {"short_side": 224, "slice_position": "uniform", "max_frames": 12}
    (folder / "manifest.json").write_text(json.dumps({"settings": {**base, **settings}, "shards": []}))
    return str(folder)


def test_frame_rule_comes_from_the_manifest_and_small_frames_are_refused(tmp_path):
    assert frame_rule_for(_fake_build(tmp_path, slice_position="tail"), 8, 224).slice_position == "tail"
    small = _fake_build(tmp_path / "x", short_side=112) if (tmp_path / "x").mkdir() is None else None
    with pytest.raises(ShardSettingsError, match="--short-side 112.*224"):
        frame_rule_for(small, 8, 224)
    assert frame_rule_for(small, 8, 112).max_frames == 8


def test_training_refuses_small_frames_before_clip_loads(tmp_path, monkeypatch):
    from train import setup as run_setup
    from train import trainer

    shards = _fake_build(tmp_path, short_side=112)
    monkeypatch.setattr(run_setup, "build_model", lambda config: pytest.fail("CLIP was loaded before the shards were checked"))
    config = parse_config(
        ["--train-shards", shards, "--output-dir", str(tmp_path / "run"), "--model", "tiny-ViT", "--steps-per-epoch", "1"]
    )
    with pytest.raises(ShardSettingsError, match="rebuild with --short-side 224"):
        trainer.train(config)


def test_training_can_start_from_a_reference_checkpoint(tmp_path, unused_shards_location):
    """``--init-from pytorch_model.bin.N`` fine-tunes a CLIP4Clip model: the first step starts from
    exactly its weights; a run with another head is refused before training."""
    from train import setup as run_setup

    model = perturbed(clip4clip(small_clip(), "seqTransf", 12))
    path = tmp_path / "pytorch_model.bin.4"
    torch.save(to_reference_layout(model.state_dict(), "clip4clip"), path)
    base = ["--train-shards", unused_shards_location, "--output-dir", str(tmp_path / "run"), "--init-from", str(path),
            "--checkpoint-format", "clip4clip", "--batch-size", "2", "--steps-per-epoch", "1", "--epochs", "1", "--workers", "0"]  # fmt: skip
    started = run_setup.build_model(parse_config([*base, "--sim-header", "seqTransf"]))
    assert all(torch.equal(started.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(run_setup.TrainingSetupError, match="--sim-header seqTransf there, meanP here"):
        run_setup.build_model(parse_config([*base, "--sim-header", "meanP"]))
    assert parse_config([*base, "--sim-header", "seqTransf"]).init_from == str(path)


@pytest.fixture
def unused_shards_location(tmp_path) -> str:
    """build_model needs no shards; the option parser needs a location string."""
    return str(tmp_path / "shards")


def test_a_published_recipe_trains_from_an_openai_file_with_clip4clips_frozen_layers(openai_file, sample_dataset, tmp_path):
    """``--recipe clip4clip-msrvtt-seqTransf --pretrained FILE``: BertAdam, CLIP4Clip's freezing
    (--freeze_layer_num 0): after two steps the patch/token embeddings, positional embeddings and
    ln_pre are exactly the file's, CLIP's blocks, the head and the temperature's group have moved."""
    from model.checkpoint import load_checkpoint
    from pipeline.annotations import load_annotations
    from pipeline.build import BuildOptions, build_shards
    from pipeline.extract import ExtractionSettings
    from runtime.run_folder import latest_checkpoint
    from shards.storage import Store
    from train.trainer import train

    shards = tmp_path / "shards"
    build_shards(load_annotations(str(sample_dataset / "annotations.jsonl")), str(sample_dataset / "videos"), Store(str(shards)),
                 ExtractionSettings(short_side=112), BuildOptions(samples_per_shard=8, workers=1, show_progress=False))  # fmt: skip
    run = tmp_path / "run"
    config = parse_config(["--recipe", "clip4clip-msrvtt-seqTransf", "--train-shards", str(shards), "--output-dir", str(run), "--pretrained",
                           openai_file, "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", "1", "--max-frames", "4", "--workers", "0",
                           "--lr", "1e-2", "--coef-lr", "1"])  # fmt: skip
    assert (config.optimizer, config.freeze_layer_num, config.caption_mode) == ("bertadam", 0, "expand")
    train(config)
    trained = load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["model"]
    original = {k: v for k, v in torch.jit.load(openai_file).state_dict().items() if k != "attn_mask"}
    assert config.precision == "fp16" and trained["clip.visual.conv1.weight"].dtype == torch.float16  # the recipe's convert_weights regime
    for name in ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight", "token_embedding.weight",
                 "positional_embedding"):  # fmt: skip
        # frozen: the file's values, in the dtype convert_weights gave them (conv1 fp16, embeddings and ln_pre fp32)
        assert torch.equal(trained["clip." + name], original[name].to(trained["clip." + name].dtype)), name
    for name in ("visual.transformer.resblocks.0.attn.in_proj_weight", "transformer.resblocks.3.mlp.c_fc.weight", "ln_final.weight"):
        assert not torch.equal(trained["clip." + name], original[name]), name
