"""The open_clip backbone: loading it (names, tags, local OpenAI/state-dict files) and the
two encoders as CLIP4Clip uses them.

CLIP4Clip's text context is 32 tokens, not CLIP's 77: positional embedding and causal mask
are *sliced* to the token length (never interpolated), and the feature is read at the end
token. open_clip's ``encode_text`` always uses all 77 positions, so text encoding is done
here on the model's own modules.
"""

from __future__ import annotations

import os
import warnings

import open_clip
import torch
from open_clip.model import build_model_from_openai_state_dict
from torch import nn

from model import hf_clip, vit_blocks
from model.features import TextFeatures
from model.half_precision import clip_dtype
from model.options import ACTIVATIONS
from model.padding import reference_pixels

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_configs")
open_clip.add_model_config(CONFIG_DIR)  # "tiny-ViT": a CPU-sized model for demos and tests

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class BackboneLoadError(RuntimeError):
    """A --pretrained value that cannot become a CLIP model; names the file or tag."""


def is_openai_layout(state: dict) -> bool:
    return "visual.proj" in state and "text_projection" in state and "visual.class_embedding" in state


def _hf_as_openai(state: dict[str, torch.Tensor], path: str) -> dict[str, torch.Tensor]:
    """Hugging Face CLIP weights in OpenAI's layout (model/hf_clip.py), with the folder's config checked."""
    try:
        return hf_clip.hf_to_openai(state, path, hf_clip.read_hf_config(path))
    except hf_clip.HFLayoutError as error:
        raise BackboneLoadError(str(error)) from error


def _read_local_weights(path: str) -> tuple[dict[str, torch.Tensor], bool]:
    """State dict from a TorchScript archive (OpenAI's release), a torch.save'd dict, or a Hugging Face
    ``save_pretrained`` folder (its ``model.safetensors`` / ``pytorch_model.bin``).

    Plain checkpoints load with ``weights_only=True``: a pickled file must not be able to
    run code. The OpenAI release is a TorchScript archive, read with ``torch.jit.load``.
    Returns the state dict and whether it came from a TorchScript archive.
    """
    if os.path.isdir(path):
        try:
            return hf_clip.read_hf_weights(path), False
        except (hf_clip.HFLayoutError, OSError, ValueError) as error:
            raise BackboneLoadError(f"{path}: not a readable Hugging Face CLIP folder ({error})") from error
    try:
        with warnings.catch_warnings():  # OpenAI ships TorchScript; torch's deprecation notice is not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            archive = torch.jit.load(path, map_location="cpu")
    except (RuntimeError, ValueError):
        archive = None
    if archive is not None:
        state = {
            k: v for k, v in archive.state_dict().items() if k not in ("input_resolution", "context_length", "vocab_size", "attn_mask")
        }
        return state, True
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling errors have many types
        raise BackboneLoadError(f"{path}: neither a TorchScript archive nor a weights-only torch checkpoint ({error})") from error
    if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise BackboneLoadError(f"{path}: no state dict inside")
    return {k.removeprefix("module."): v for k, v in loaded.items()}, False


def openai_architecture(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The numbers that define a CLIP ViT, read off weights in OpenAI's key layout (as OpenAI's
    ``build_model`` and CLIP4Clip's ``modeling.py`` read them)."""
    return {
        "embed_dim": state["text_projection"].shape[1],
        "image_size": state["visual.conv1.weight"].shape[-1] * round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5),
        "vision_width": state["visual.conv1.weight"].shape[0],
        "vision_layers": len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")}),
        "patch_size": state["visual.conv1.weight"].shape[-1],
        "text_width": state["ln_final.weight"].shape[0],
        "text_layers": len({k.split(".")[2] for k in state if k.startswith("transformer.resblocks.")}),
        "context_length": state["positional_embedding"].shape[0],
    }


def config_architecture(model_name: str) -> dict[str, int] | None:
    """The same numbers for an open_clip model name; None for a name open_clip does not know or a
    non-ViT tower (those never come in OpenAI's ViT layout)."""
    config = open_clip.get_model_config(model_name)
    if not config or "timm_model_name" in config.get("vision_cfg", {}) or "hf_model_name" in config.get("text_cfg", {}):
        return None
    vision, text = config["vision_cfg"], config["text_cfg"]
    size = vision["image_size"]
    return {
        "embed_dim": config["embed_dim"],
        "image_size": size[0] if isinstance(size, list | tuple) else size,
        "vision_width": vision["width"],
        "vision_layers": vision["layers"],
        "patch_size": vision["patch_size"],
        "text_width": text["width"],
        "text_layers": text["layers"],
        "context_length": text.get("context_length", 77),
    }


def _check_model_name_agrees(model_name: str, state: dict[str, torch.Tensor], path: str) -> None:
    """A ``--model`` next to an OpenAI-layout file may only restate what the weights say."""
    from_weights = openai_architecture(state)
    from_name = config_architecture(model_name)
    if from_name is None:
        raise BackboneLoadError(
            f"--model {model_name} contradicts {path}: open_clip has no ViT config of that name, while the file holds "
            f"a CLIP ViT ({_format_architecture(from_weights)}); leave --model out, the file decides its architecture"
        )
    differing = {k: (from_name[k], from_weights[k]) for k in from_weights if from_name[k] != from_weights[k]}
    if differing:
        shown = ", ".join(f"{k} {name} vs {weights}" for k, (name, weights) in differing.items())
        raise BackboneLoadError(
            f"--model {model_name} contradicts {path} ({shown}; --model vs file): leave --model out, "
            "an OpenAI-layout file decides its architecture"
        )


def _format_architecture(arch: dict[str, int]) -> str:
    return (
        f"vision {arch['vision_layers']}x{arch['vision_width']} patch {arch['patch_size']} at {arch['image_size']}px, "
        f"text {arch['text_layers']}x{arch['text_width']}, embed {arch['embed_dim']}"
    )


def _build_from_openai_state(state: dict[str, torch.Tensor], quick_gelu: bool, path: str) -> nn.Module:
    try:
        model = build_model_from_openai_state_dict(state, quick_gelu=quick_gelu, cast_dtype=None).float()
        # the builder rounds weights through fp16 (OpenAI's storage type); reload them in fp32
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    except (KeyError, RuntimeError) as error:
        raise BackboneLoadError(f"{path}: OpenAI-layout weights that do not form a CLIP model ({error})") from error
    return model


def activation_name(clip: nn.Module) -> str:
    """The MLP activation CLIP's blocks really use ("QuickGELU" or "GELU"), read off the module."""
    return type(clip.transformer.resblocks[0].mlp.gelu).__name__


def describe_backbone(clip: nn.Module) -> str:
    """One line for start-up logs: what network the weights went into, activation included."""
    visual = clip.visual
    arch = {
        "vision_layers": len(visual.transformer.resblocks),
        "vision_width": visual.transformer.width,
        "patch_size": visual.patch_size[0] if isinstance(visual.patch_size, tuple | list) else visual.patch_size,
        "image_size": input_size(clip),
        "text_layers": len(clip.transformer.resblocks),
        "text_width": clip.transformer.width,
        "embed_dim": clip.text_projection.shape[1],
    }
    return f"CLIP ViT: {_format_architecture(arch)}; activation {activation_name(clip)}"


def load_clip(model_name: str | None, pretrained: str | None, activation: str = "auto") -> nn.Module:
    """An fp32 open_clip CLIP model.

    - ``pretrained`` a local file in OpenAI's key layout (OpenAI's TorchScript ``ViT-B-32.pt``,
      or a state dict with the same keys): the architecture is read off the weights, never
      from ``model_name`` (which may only restate it: a contradiction is refused). The
      activation is QuickGELU, as OpenAI trained with it (plain GELU loads the same weights
      without a word and is ~6e-2 off); ``activation="gelu"`` is for state dicts of open_clip
      models trained with GELU (LAION's), and is refused for OpenAI's TorchScript archive.
    - ``pretrained`` Hugging Face CLIP weights (a ``save_pretrained`` folder, or a state dict with
      ``CLIPModel``'s keys, as X-Pool and T-MASS use): renamed to OpenAI's layout (model/hf_clip.py)
      and built as above, QuickGELU.
    - ``pretrained`` another local state dict: ``model_name`` gives the architecture.
    - ``pretrained`` an open_clip tag (``openai``, ``laion2b_s34b_b79k``): open_clip's
      registry (it downloads; this project's machines have no internet, so use files).
    - no ``pretrained``: random initialisation of ``model_name``.

    ``activation``: ``auto`` (the above), ``quickgelu`` or ``gelu`` to force one.
    """
    if activation not in ACTIVATIONS:
        raise BackboneLoadError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
    if pretrained and (os.path.isfile(pretrained) or hf_clip.is_hf_folder(pretrained)):
        state, from_torchscript = _read_local_weights(pretrained)
        if hf_clip.is_hf_layout(state):  # transformers' CLIPModel (X-Pool's, T-MASS's): OpenAI's weights, other names
            if activation == "gelu":
                raise BackboneLoadError(f"{pretrained}: Hugging Face's CLIP runs QuickGELU (its config's hidden_act); --activation gelu "
                                        "would be wrong")  # fmt: skip
            state = _hf_as_openai(state, pretrained)
        if is_openai_layout(state):
            if activation == "gelu" and from_torchscript:
                raise BackboneLoadError(
                    f"{pretrained}: OpenAI's TorchScript release was trained with QuickGELU; --activation gelu would be wrong"
                )
            if model_name:
                _check_model_name_agrees(model_name, state, pretrained)
            return _build_from_openai_state(state, activation != "gelu", pretrained).train()
        if model_name is None:
            raise BackboneLoadError(f"{pretrained}: not in OpenAI layout; pass --model to say which architecture it holds")
        model = _create(model_name, None, activation)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise BackboneLoadError(f"{pretrained}: does not match {model_name} (missing {missing[:5]}, unexpected {unexpected[:5]})")
        return model.float().train()
    if pretrained and (os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))):
        raise BackboneLoadError(f"{pretrained}: file not found")
    if model_name is None:
        raise BackboneLoadError("pass --model (an open_clip model name) or --pretrained FILE")
    return _create(model_name, pretrained, activation).float().train()


def _create(model_name: str, pretrained: str | None, activation: str) -> nn.Module:
    """open_clip's own builder; ``activation`` overrides the config's choice when not auto."""
    text_tower = (open_clip.get_model_config(model_name) or {}).get("text_cfg", {})
    if text_tower.get("hf_model_name"):  # encode_text below needs CLIP's own text modules (and see model/open_clip_import.py)
        raise BackboneLoadError(f"--model {model_name}: its text tower is Hugging Face's {text_tower['hf_model_name']}; CLIP4Clip encodes text "
                                "with CLIP's own text transformer (token embedding, causal mask, end token), so only a CLIP text tower works")  # fmt: skip
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, force_quick_gelu=activation == "quickgelu")
    except (RuntimeError, ValueError) as error:
        raise BackboneLoadError(f"open_clip cannot build {model_name!r} with pretrained={pretrained!r}: {error}") from error
    if activation == "gelu" and activation_name(model) != "GELU":
        raise BackboneLoadError(f"{model_name}: its open_clip config uses QuickGELU; --activation gelu cannot change that")
    return model


def encode_text(clip: nn.Module, tokens: torch.Tensor) -> TextFeatures:
    """CLIP4Clip text encoding: context sliced to ``tokens.shape[1]``, feature at the end token."""
    length = tokens.shape[1]
    if length > clip.positional_embedding.shape[0]:
        raise ValueError(f"{length} tokens exceed the model's context of {clip.positional_embedding.shape[0]}")
    dtype = clip_dtype(clip)  # fp16 under --precision fp16: as OpenAI CLIP, embeddings cast to it before they are added
    x = clip.token_embedding(tokens).to(dtype) + clip.positional_embedding[:length].to(dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    projection = clip.text_projection
    x = (projection(x) if isinstance(projection, nn.Linear) else x @ projection).float()
    end = tokens.argmax(dim=-1)  # the end token has the largest id in CLIP's vocabulary
    positions = torch.arange(length, device=tokens.device)
    return TextFeatures(
        pooled=x[torch.arange(x.shape[0], device=x.device), end],
        tokens=x,
        mask=positions[None, :] <= end[:, None],
    )


def normalize_frames(frames_uint8: torch.Tensor, zero_padded: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (..., 3, H, W) -> CLIP-normalised float, on whatever device the frames are.

    The data stream ships uint8 (4x smaller than float over worker queues and PCIe) and
    normalisation happens on the accelerator. ``zero_padded`` (a frame mask): padded frames become
    all zeros after normalisation, as the reference loaders feed them (``--padding-rule reference``).
    """
    mean = torch.tensor(CLIP_MEAN, device=frames_uint8.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=frames_uint8.device).view(3, 1, 1)
    pixels = (frames_uint8.float() / 255.0 - mean) / std
    return pixels if zero_padded is None else reference_pixels(pixels, zero_padded)


def input_size(clip: nn.Module) -> int:
    """Side of the square image the vision tower takes (open_clip stores an int or a pair)."""
    size = clip.visual.image_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def encode_frames(clip: nn.Module, frames_uint8: torch.Tensor, zero_padded: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, 3, H, W) uint8 -> (B, T, D) per-frame CLIP image features (``zero_padded``: normalize_frames)."""
    batch, count = frames_uint8.shape[:2]
    pixels = normalize_frames(frames_uint8.flatten(0, 1), zero_padded).to(clip_dtype(clip))  # fp16 under --precision fp16
    return clip.encode_image(pixels).float().view(batch, count, -1)


def encode_frames_and_patches(clip: nn.Module, frames_uint8: torch.Tensor,
                              zero_padded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(B, T, 3, H, W) uint8 -> (B, T, D) frame features and (B, T, P, D) patch tokens from one pass.

    As EERCF's ``encode_image(return_hidden=True)``: every token after ``ln_post`` and the
    projection; the class token is the frame feature (what ``encode_image`` returns), the rest
    are the patches. The tower is checked once, when EERCF's similarity is built."""
    visual = clip.visual
    batch, count = frames_uint8.shape[:2]
    pixels = normalize_frames(frames_uint8.flatten(0, 1), zero_padded).to(clip_dtype(clip))
    tokens = vit_blocks.project_tokens(visual, visual.transformer(visual._embeds(pixels))).float()
    return tokens[:, 0].view(batch, count, -1), tokens[:, 1:].reshape(batch, count, tokens.shape[1] - 1, -1)


def tokenizer_for(model_name: str | None):
    """open_clip's tokenizer for the model; CLIP's BPE (shipped in the wheel) by default."""
    if model_name:
        return open_clip.get_tokenizer(model_name)
    return open_clip.tokenizer.SimpleTokenizer()
