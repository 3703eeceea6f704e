"""TempMe: temporal token merging for parameter-efficient text-video retrieval.

Reference: LunarShen/TempMe, ``modules/modeling.py`` ``get_video_feat``,
``modules/module_tome_patch.py`` ``ToMeBlock``; defaults from its ``main.py``. The math:
``MergingVideoEncoder`` in model/tempme.py (ToMe inside frames, progressive cross-frame merging,
per-frame position embeddings) on a frozen CLIP with TempMe's LoRA (q/k/v of both towers, no
scale: model/peft.py). This module owns TempMe's schedule (``MergeSchedule``), read from its flags
and checked before CLIP is loaded; the dual-attention seed reuses it.

- ``--peft tempme`` selects it; TempMe's update is ``tempme-adamw`` (train/optim.py).
- Padding: ``reference`` has no frame mask inside the encoder (padded tokens take part in
  merging), as TempMe; ``masked`` keeps padded frames out of every merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.merge_schedule import MergeSchedule, schedule_from_flags
from model.methods.registry import Method, register
from model.options import option

# the --peft modes whose encoder runs CLIP block by block (no gradient checkpointing there)
BLOCKWISE_ENCODER = "it runs CLIP block by block"


@dataclass(kw_only=True)
class TempMeOptions:
    tome_r: int = option(2, "TempMe's --tome_r: tokens merged per layer within each frame before the first merge layer")
    merge_layers: str = option("8-9-10", "TempMe's --merge_layer: layers (0-based) where frames join into segments")
    merge_frames: str = option("2-2-3", "TempMe's --merge_frame_num: groups joined at each merge layer (12 -> 6 -> 3 -> 1)")
    merge_token_proportion: str = option("30-10", "TempMe's --merge_token_proportion: % merged across joined frames, % within groups")
    frame_pos: bool = option(True, "TempMe's --frame_pos: learned per-frame embedding added where frames join")

    def merge_schedule(self) -> MergeSchedule:
        """TempMe's schedule from its flags (--peft tempme)."""
        return schedule_from_flags(self.tome_r, self.merge_layers, self.merge_frames, self.merge_token_proportion, self.frame_pos)


def schedule_problem(schedule: Any, config: Any) -> str | None:
    """A schedule's problem for the config's frames (its depth is checked when CLIP is loaded)."""
    try:
        built = schedule()
    except ValueError as error:
        return str(error)
    return built.problem(config.max_frames)


def blockwise_encoder_problem(config: Any) -> str | None:
    """What --peft tempme, dgl and dual share: their encoders run CLIP block by block."""
    if config.grad_checkpointing:
        return f"--grad-checkpointing is not wired into --peft {config.peft}'s encoder ({BLOCKWISE_ENCODER}); drop one of them"
    return None


@register
class TempMe(Method):
    name = "tempme"
    title = "TempMe: Temporal Token Merging for efficient text-video retrieval (Shen et al., ICLR 2025)"
    reference = "LunarShen/TempMe: modules/modeling.py get_video_feat, modules/module_tome_patch.py ToMeBlock, main.py"
    options = TempMeOptions
    peft_modes = ("tempme",)
    optimizer = "tempme-adamw"

    def is_active(self, config: Any) -> bool:
        return config.peft == "tempme"

    def problem(self, config: Any) -> str | None:
        return schedule_problem(config.merge_schedule, config)

    def run_problem(self, config: Any) -> str | None:
        return blockwise_encoder_problem(config)

    def prepare_clip(self, clip: Any, config: Any) -> None:
        from model.peft import add_tempme_lora

        add_tempme_lora(clip, config.lora_rank)

    def adapter(self, clip: Any, config: Any) -> Any:
        from model.tempme import MergingVideoEncoder

        return MergingVideoEncoder(clip, config.merge_schedule(), config.max_frames)
