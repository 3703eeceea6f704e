"""Rebuild a trained CLIP4Clip from its checkpoint alone (no network, no original weight file)."""

from __future__ import annotations

import open_clip
from open_clip.model import build_model_from_openai_state_dict

from train.config import TrainConfig
from train.model import CLIP4Clip


def restore_model(state: dict) -> tuple[CLIP4Clip, TrainConfig]:
    """The architecture comes from the stored config: an open_clip name, or, for runs started
    from an OpenAI-layout file, from the shapes of the stored CLIP weights themselves."""
    config = TrainConfig(**state["config"])
    weights = state["model"]
    if config.model:
        clip = open_clip.create_model(config.model, pretrained=None, force_quick_gelu=config.force_quick_gelu)
    else:
        clip_state = {k.removeprefix("clip."): v for k, v in weights.items() if k.startswith("clip.")}
        clip = build_model_from_openai_state_dict(clip_state, quick_gelu=True, cast_dtype=None)
    model = CLIP4Clip(clip.float(), config.sim_header, config.max_frames)
    model.load_state_dict(weights)
    return model.eval(), config
