"""Rebuild a trained model from its checkpoint (no network).

Full runs carry every weight, and the architecture comes from the stored config: an
open_clip name, or, for runs started from an OpenAI-layout file, the shapes of the stored CLIP
weights themselves. PEFT runs carry only their trainable part and a reference to the frozen
base file, which is loaded (and its SHA-256 checked) first.
"""

from __future__ import annotations

import open_clip
from open_clip.model import build_model_from_openai_state_dict

from model import backbone
from model.clip4clip import CLIP4Clip
from model.config import ModelConfig
from model.factory import assemble_model
from model.half_precision import convert_weights, state_is_half
from model.peft import check_base, load_trainable_state
from runtime.logs import weights_follow


def restore_model(state: dict, base_weights: str | None = None) -> tuple[CLIP4Clip, ModelConfig]:
    """``base_weights`` overrides where a PEFT checkpoint's frozen base is read from (moved files)."""
    config = ModelConfig.from_stored(state["config"])
    weights = state["model"]
    base = state.get("base")
    if base:
        path = base_weights or base["pretrained"]
        check_base(base, path)
        clip = backbone.load_clip(config.model, path, config.activation)
        model = assemble_model(clip, config)
        load_trainable_state(model, weights)
        return model.eval(), config
    clip_state = {k.removeprefix("clip."): v for k, v in weights.items() if k.startswith("clip.")}
    recorded = (state.get("backbone") or {}).get("activation")
    if recorded and backbone.is_openai_layout(clip_state):
        clip = build_model_from_openai_state_dict(clip_state, quick_gelu=recorded == "QuickGELU", cast_dtype=None)
    elif config.model:  # checkpoints from before the activation was recorded
        with weights_follow():
            clip = open_clip.create_model(config.model, pretrained=None, force_quick_gelu=config.activation == "quickgelu")
    else:
        clip = build_model_from_openai_state_dict(clip_state, quick_gelu=config.activation != "gelu", cast_dtype=None)
    model = assemble_model(clip.float(), config)
    if state_is_half(weights):  # trained under --precision fp16 (or a reference's fp16 save): evaluated in that regime too
        convert_weights(model.clip)
    model.load_state_dict(weights)
    return model.eval(), config
