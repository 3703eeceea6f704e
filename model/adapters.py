"""Encoders that run a frozen CLIP their own way (TempMe, DGL, the dual-attention seed): the one
place that turns ``--peft`` and its flags into such a module.

An adapter lives next to CLIP in the model (``CLIP4Clip.adapter``), never inside it: its
parameters are new modules (trained at ``--lr``, saved in PEFT checkpoints) and CLIP's frozen
weights stay where the base file put them. It offers ``encode_video(clip, pixels, mask)`` ->
(per-frame features, global feature or None), optionally ``encode_text(clip, tokens)``, and
``alpha``: the weight of the global feature in the video vector (1: the global feature alone, as
DGL; 0.4 for the seed).
"""

from __future__ import annotations

from torch import nn

from model.config import ModelConfig
from model.dgl import DGLEncoder
from model.tempme import MergingVideoEncoder


def build_adapter(clip: nn.Module, config: ModelConfig) -> nn.Module | None:
    if config.peft == "tempme":
        return MergingVideoEncoder(clip, config.merge_schedule(), config.max_frames)
    if config.peft == "dual":
        plan = config.seed_plan()
        return MergingVideoEncoder(clip, plan.schedule, config.max_frames, config.dgl_global_prompts, plan.prompt_layer, plan.alpha)
    if config.peft == "dgl":
        return DGLEncoder(clip, config.dgl_latent, config.max_frames, config.dgl_text_prompts, config.dgl_frame_prompts,
                          config.dgl_global_prompts, config.dgl_prompt_layers)  # fmt: skip
    return None
