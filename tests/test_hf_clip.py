"""CLIP weights in Hugging Face's layout (model/hf_clip.py) build the network transformers' own CLIPModel
computes, and X-Pool's released checkpoints (CLIP in that layout under clip.*, its pooling under
pool_frames.*) load through --checkpoint-format xpool and score as its code scores them."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from model.backbone import BackboneLoadError, load_clip
from model.foreign_checkpoints import ForeignCheckpointError, load_any_checkpoint
from model.restore import restore_model
from tests import reference_xpool

SOT, EOT = 49406, 49407


def small_config(activation: str = "quick_gelu", mlp: int = 256) -> CLIPConfig:
    """ViT-B/32's shapes scaled down: 64-wide heads, an MLP 4 x the width, QuickGELU."""
    text = {"hidden_size": 64, "intermediate_size": mlp, "num_hidden_layers": 2, "num_attention_heads": 1, "max_position_embeddings": 77,
            "vocab_size": 49408, "hidden_act": activation}  # fmt: skip
    vision = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 64,
              "patch_size": 16, "hidden_act": activation}  # fmt: skip
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)


@pytest.fixture(scope="module")
def hf_model() -> CLIPModel:
    torch.manual_seed(0)
    model = CLIPModel(small_config()).eval()
    with torch.no_grad():  # every weight away from its initial value, layer norms included
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def captions() -> torch.Tensor:
    tokens = torch.zeros(3, 77, dtype=torch.long)
    for row, words in enumerate(([320, 1125, 539], [5, 6, 7, 8, 9, 10, 11], [4000])):
        tokens[row, 0], tokens[row, 1 : 1 + len(words)], tokens[row, 1 + len(words)] = SOT, torch.tensor(words), EOT
    return tokens


def features(output) -> torch.Tensor:  # noqa: ANN001 - transformers 5 returns a model output, 4 a tensor
    return output.pooler_output if hasattr(output, "pooler_output") else output


def assert_same_network(clip: torch.nn.Module, hf_model: CLIPModel) -> None:
    tokens, images = captions(), torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(clip.encode_text(tokens), features(hf_model.get_text_features(input_ids=tokens)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(clip.encode_image(images), features(hf_model.get_image_features(pixel_values=images)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(clip.logit_scale, hf_model.logit_scale)


def test_a_save_pretrained_folder_is_the_same_network(hf_model, tmp_path):
    hf_model.save_pretrained(tmp_path / "clip")
    assert (tmp_path / "clip" / "model.safetensors").is_file() and (tmp_path / "clip" / "config.json").is_file()
    clip = load_clip(None, str(tmp_path / "clip")).eval()
    assert_same_network(clip, hf_model)
    assert type(clip.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


def test_a_state_dict_with_clipmodels_keys_is_the_same_network(hf_model, tmp_path):
    torch.save(hf_model.state_dict(), tmp_path / "pytorch_model.bin")
    assert_same_network(load_clip(None, str(tmp_path / "pytorch_model.bin")).eval(), hf_model)


def test_what_openais_layout_cannot_hold_is_refused(hf_model, tmp_path):
    CLIPModel(small_config(activation="gelu")).save_pretrained(tmp_path / "gelu")
    with pytest.raises(BackboneLoadError, match=r"gelu.*hidden_act is 'gelu'; OpenAI's layout is built with QuickGELU"):
        load_clip(None, str(tmp_path / "gelu"))
    state = dict(hf_model.state_dict())
    state["text_model.encoder.layers.0.extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "extra.bin")
    with pytest.raises(BackboneLoadError, match=r"extra.bin: keys with no place in OpenAI's layout: \['text_model.encoder.layers.0.extra"):
        load_clip(None, str(tmp_path / "extra.bin"))
    state = {k: v for k, v in hf_model.state_dict().items() if k != "visual_projection.weight"}
    torch.save(state, tmp_path / "short.bin")
    with pytest.raises(BackboneLoadError, match="short.bin: Hugging Face CLIP weights without visual_projection.weight"):
        load_clip(None, str(tmp_path / "short.bin"))


def xpool_release(hf_model: CLIPModel) -> tuple[dict, reference_xpool.Transformer]:
    """A file laid out as X-Pool's trainer saves model_best.pth: {"epoch", "state_dict", "optimizer"}."""
    torch.manual_seed(2)
    pool = reference_xpool.Transformer(reference_xpool.config(32, 1, 0.3)).eval()
    with torch.no_grad():
        for parameter in pool.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    state = {**{f"clip.{k}": v for k, v in hf_model.state_dict().items()}, **{f"pool_frames.{k}": v for k, v in pool.state_dict().items()}}
    return {"epoch": 3, "state_dict": state, "optimizer": {}}, pool


def test_xpools_released_checkpoint_scores_as_its_code(hf_model, tmp_path):
    release, pool = xpool_release(hf_model)
    torch.save(release, tmp_path / "model_best.pth")
    state = load_any_checkpoint(str(tmp_path / "model_best.pth"))  # auto: pool_frames.* marks X-Pool's files
    assert state["source"]["format"] == "xpool"
    model, config = restore_model(state)
    assert config.xpool and config.sim_header == "meanP" and config.padding_rule == "reference"
    assert_same_network(model.clip, hf_model)
    text, frames = torch.randn(4, 32) * 3, torch.randn(3, 12, 32) * 3
    with torch.no_grad():
        torch.testing.assert_close(model.similarity.pool(text, frames, torch.ones(3, 12, dtype=torch.bool)), pool(text, frames),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip


def test_a_checkpoint_of_another_layout_is_refused_naming_both(hf_model, tmp_path):
    release, _ = xpool_release(hf_model)
    torch.save(release, tmp_path / "model_best.pth")
    with pytest.raises(ForeignCheckpointError, match=r"model_best.pth: does not fit a drl meanP model.*its keys carry the marks of xpool"):
        load_any_checkpoint(str(tmp_path / "model_best.pth"), checkpoint_format="drl")


def test_tmass_released_checkpoint_loads_with_its_radius(hf_model, tmp_path):
    from tests import reference_tmass

    release, pool = xpool_release(hf_model)
    stochastic = reference_tmass.StochasticText(reference_tmass.config(12, 32))
    with torch.no_grad():
        stochastic.std_branch.linear_proj.weight.normal_()
        stochastic.std_branch.learnable_scalar.fill_(0.5)
    release["state_dict"].update({f"stochastic.{k}": v for k, v in stochastic.state_dict().items()})
    torch.save(release, tmp_path / "tmass_best.pth")
    state = load_any_checkpoint(str(tmp_path / "tmass_best.pth"))  # auto: stochastic.std_branch.* marks T-MASS's files
    assert state["source"]["format"] == "tmass"
    model, config = restore_model(state)
    assert config.tmass and not config.xpool and config.max_frames == 12
    text, frames = torch.randn(3, 32), torch.randn(3, 12, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.similarity.radius.paired(text, frames, torch.ones(3, 12, dtype=torch.bool)),
                                   stochastic.std_branch(text, frames), atol=1e-5, rtol=1e-5)  # fmt: skip
        torch.testing.assert_close(model.similarity.pool(text, frames, torch.ones(3, 12, dtype=torch.bool)), pool(text, frames),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
