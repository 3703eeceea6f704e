"""CLIP weights in Hugging Face's layout (``transformers``' ``CLIPModel``), read as OpenAI's.

X-Pool and T-MASS load CLIP with ``CLIPModel.from_pretrained("openai/clip-vit-base-patch32")``, so
their released checkpoints and many users' CLIP weights carry Hugging Face's names: a folder with
``model.safetensors`` or ``pytorch_model.bin`` and ``config.json``, or a state dict with the same
keys. The renaming below turns them into OpenAI's layout, which open_clip builds with its own
``build_model_from_openai_state_dict``, so a Hugging Face checkpoint becomes the same network a
``ViT-B-32.pt`` file does (QuickGELU, the causal text mask, the end-token feature).

The table is Hugging Face's own ``convert_clip_original_pytorch_to_hf.py`` read backwards: q, k
and v projections are concatenated into ``in_proj``, the two projections are transposed, every other
tensor keeps its shape. ``transformers`` is not needed here; the tests check the result against
``CLIPModel`` itself (tests/test_hf_clip.py).
"""

from __future__ import annotations

import json
import os

import torch

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OPENAI_HEAD_WIDTH = 64  # open_clip's builder reads heads as width // 64 off OpenAI's weights
# (Hugging Face's name inside one layer, OpenAI's); q/k/v are concatenated separately
_LAYER = (("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."),
          ("mlp.fc2.", "mlp.c_proj."))  # fmt: skip
_DIRECT = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",  # sic: Hugging Face's spelling
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}
_TOWERS = (("text_model.encoder.layers.", "transformer.resblocks."), ("vision_model.encoder.layers.", "visual.transformer.resblocks."))
_BUFFERS = ("position_ids",)  # older transformers versions saved these; OpenAI's layout has none


class HFLayoutError(ValueError):
    """Weights in Hugging Face's layout that cannot become OpenAI's; names the file and the cause."""


def is_hf_layout(state: dict) -> bool:
    return "text_model.embeddings.token_embedding.weight" in state and "vision_model.embeddings.patch_embedding.weight" in state


def is_hf_folder(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, name)) for name in HF_WEIGHT_FILES)


def read_hf_weights(path: str) -> dict[str, torch.Tensor]:
    """The weights of a ``save_pretrained`` folder."""
    for name in HF_WEIGHT_FILES:
        weights = os.path.join(path, name)
        if not os.path.isfile(weights):
            continue
        if name.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(weights)
        return torch.load(weights, map_location="cpu", weights_only=True)
    raise HFLayoutError(f"{path}: a folder without {' or '.join(HF_WEIGHT_FILES)}")


def read_hf_config(path: str) -> dict | None:
    """A ``save_pretrained`` folder's ``config.json`` (None when absent, or for a single file)."""
    config_file = os.path.join(path, "config.json")
    return json.loads(open(config_file, encoding="utf-8").read()) if os.path.isfile(config_file) else None


def _check_config(config: dict | None, path: str) -> None:
    """What OpenAI's layout cannot say and open_clip would assume: QuickGELU, 64-wide heads, an MLP 4 x the width."""
    if not config:
        return
    for tower in ("text_config", "vision_config"):
        part = config.get(tower) or {}
        activation = part.get("hidden_act", "quick_gelu")
        if activation != "quick_gelu":
            raise HFLayoutError(f"{path}: {tower}.hidden_act is {activation!r}; OpenAI's layout is built with QuickGELU")
        width, heads, hidden = part.get("hidden_size"), part.get("num_attention_heads"), part.get("intermediate_size")
        if width and hidden and hidden != 4 * width:
            raise HFLayoutError(f"{path}: {tower}'s MLP is {hidden} wide for width {width}; OpenAI's layout is 4 x width")
        if width and heads and width // heads != OPENAI_HEAD_WIDTH:
            raise HFLayoutError(f"{path}: {tower} has {heads} heads of width {width // heads}; OpenAI's layout (and open_clip's "
                                f"builder) reads heads as width / {OPENAI_HEAD_WIDTH}")  # fmt: skip


def hf_to_openai(state: dict[str, torch.Tensor], path: str, config: dict | None = None) -> dict[str, torch.Tensor]:
    """OpenAI's layout of Hugging Face CLIP weights; every key must find its place, or the file is refused."""
    _check_config(config, path)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for hf_name, openai_name in {**_DIRECT, **_TRANSPOSED}.items():
        if hf_name not in state:
            raise HFLayoutError(f"{path}: Hugging Face CLIP weights without {hf_name}")
        out[openai_name] = state[hf_name].t().contiguous() if hf_name in _TRANSPOSED else state[hf_name]
        used.add(hf_name)
    for hf_prefix, openai_prefix in _TOWERS:
        layers = sorted({int(k[len(hf_prefix) :].split(".")[0]) for k in state if k.startswith(hf_prefix)})
        for layer in layers:
            source, target = f"{hf_prefix}{layer}.", f"{openai_prefix}{layer}."
            for part in ("weight", "bias"):
                names = [f"{source}self_attn.{p}_proj.{part}" for p in ("q", "k", "v")]
                out[f"{target}attn.in_proj_{part}"] = torch.cat([state[n] for n in names])
                used.update(names)
            for hf_part, openai_part in _LAYER:
                for key in [k for k in state if k.startswith(source + hf_part)]:
                    out[target + openai_part + key[len(source + hf_part) :]] = state[key]
                    used.add(key)
    left = sorted(k for k in state if k not in used and not k.endswith(_BUFFERS))
    if left:
        raise HFLayoutError(f"{path}: keys with no place in OpenAI's layout: {left[:8]}{' ...' if len(left) > 8 else ''}")
    return out
