"""Loading CLIP weights the ways users have them, proven on a tiny model in OpenAI's format."""

import subprocess
import sys

import open_clip
import pytest
import torch

from model.backbone import BackboneLoadError, encode_text, load_clip, tokenizer_for
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def tiny_reference():
    torch.manual_seed(0)
    return open_clip.create_model("tiny-ViT", pretrained=None, force_quick_gelu=True).eval()


@pytest.fixture(scope="module")
def openai_archive(tiny_reference, tmp_path_factory):
    """A TorchScript archive with OpenAI's key layout, as ViT-B-32.pt is."""
    path = tmp_path_factory.mktemp("weights") / "tiny-openai.pt"
    torch.jit.script(tiny_reference).save(str(path))
    return path


def _inputs():
    torch.manual_seed(1)
    images = torch.randn(2, 3, 224, 224)
    tokens = tokenizer_for(None)(["a red circle moves from left to right", "a blue square"])
    return images, tokens


def test_openai_torchscript_archive_matches_open_clip(openai_archive, tiny_reference):
    state = torch.jit.load(str(openai_archive)).state_dict()
    assert "visual.proj" in state and "transformer.resblocks.0.attn.in_proj_weight" in state
    loaded = load_clip(None, str(openai_archive)).eval()
    images, tokens = _inputs()
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(images), tiny_reference.encode_image(images), atol=1e-5)
        assert torch.allclose(loaded.encode_text(tokens), tiny_reference.encode_text(tokens), atol=1e-5)
    # QuickGELU forced: a GELU model with the same weights gives different features
    gelu = open_clip.create_model("tiny-ViT", pretrained=None)
    assert type(loaded.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert type(gelu.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"  # tiny-ViT config sets quick_gelu


def test_plain_state_dict_with_model_name(tiny_reference, tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_reference.state_dict().items()}}, path)
    loaded = load_clip("tiny-ViT", str(path)).eval()
    images, _ = _inputs()
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(images), tiny_reference.encode_image(images), atol=1e-6)


def test_bad_weight_files_are_named(tmp_path, tiny_reference):
    with pytest.raises(BackboneLoadError, match="missing.pt"):
        load_clip(None, str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneLoadError, match="junk.pt"):
        load_clip(None, str(junk))
    plain = tmp_path / "plain.pt"
    torch.save({"x": torch.ones(1)}, plain)
    with pytest.raises(BackboneLoadError, match="--model"):
        load_clip(None, str(plain))
    with pytest.raises(BackboneLoadError, match="does not match"):
        load_clip("tiny-ViT", str(plain))


def test_text_context_is_sliced_not_interpolated(tiny_reference):
    tokens77 = tokenizer_for(None)(["a red circle moves from left to right"])
    tokens32 = tokenizer_for(None)(["a red circle moves from left to right"], context_length=32)
    with torch.no_grad():
        full = tiny_reference.encode_text(tokens77)
        sliced = encode_text(tiny_reference, tokens32)
    assert torch.allclose(full, sliced.pooled, atol=1e-5)
    assert sliced.tokens.shape == (1, 32, 64) and sliced.mask.sum().item() == 10
    long_caption = tokenizer_for(None)(["word " * 60], context_length=32)
    assert long_caption.shape == (1, 32) and long_caption[0, -1].item() == long_caption.max().item()  # end token kept


def test_a_hugging_face_text_tower_is_refused_by_name():
    """open_clip's configs with a Hugging Face text tower (RoBERTa, XLM-R, mT5) cannot run CLIP4Clip's text encoding."""
    with pytest.raises(BackboneLoadError, match="roberta-ViT-B-32: its text tower is Hugging Face's roberta-base"):
        load_clip("roberta-ViT-B-32", None)


def test_open_clip_is_imported_without_transformers_which_stays_importable():
    """model/open_clip_import.py: in a fresh interpreter the model stack leaves transformers unimported (about a
    second of every command where it is installed). Only open_clip's import-time import is skipped: an open_clip
    function that imports it when called (as its Hugging Face tokenizer does) finds it, and so does anyone else."""
    pytest.importorskip("transformers")  # the rule only matters where it is installed (a test requirement)
    script = """
import sys, model.backbone, open_clip.hf_model
print("transformers" not in sys.modules and open_clip.hf_model.transformers is None)
namespace = {"__name__": "open_clip.tokenizer_like"}
exec("def load():\\n    from transformers import CLIPTokenizer\\n    return CLIPTokenizer.__name__", namespace)
print(namespace["load"]())
import transformers
print(transformers.__name__)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "CLIPTokenizer", "transformers"]
