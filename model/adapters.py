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
from model.dual_attention import SeedFlags, interpret
from model.tempme import MergeSchedule, MergingVideoEncoder, parse_dashes


def merge_percentages(config: ModelConfig) -> tuple[float, float]:
    """TempMe's ``merge_token_proportion 30-10`` -> (0.30, 0.10), computed as TempMe does (int / 100)."""
    parts = parse_dashes(config.merge_token_proportion, "merge-token-proportion")
    if len(parts) != 2:
        raise ValueError("--merge-token-proportion takes two percentages, like 30-10")
    return parts[0] / 100, parts[1] / 100


def build_adapter(clip: nn.Module, config: ModelConfig) -> nn.Module | None:
    if config.peft == "tempme":
        cross, intra = merge_percentages(config)
        schedule = MergeSchedule(config.tome_r, parse_dashes(config.merge_layers, "merge-layers"),
                                 parse_dashes(config.merge_frames, "merge-frames"), cross, intra, config.frame_pos)  # fmt: skip
        return MergingVideoEncoder(clip, schedule, config.max_frames)
    if config.peft == "dual":
        cross, intra = merge_percentages(config)
        flags = SeedFlags(config.frame_per_seg, config.seg_num, config.seg_layer, config.sel_layer, config.alpha)
        plan = interpret(flags, config.max_frames, config.tome_r, cross, intra, config.frame_pos)
        return MergingVideoEncoder(clip, plan.schedule, config.max_frames, config.dgl_global_prompts, plan.prompt_layer, plan.alpha)
    if config.peft == "dgl":
        return DGLEncoder(clip, config.dgl_latent, config.max_frames, config.dgl_text_prompts, config.dgl_frame_prompts,
                          config.dgl_global_prompts, config.dgl_prompt_layers)  # fmt: skip
    return None
