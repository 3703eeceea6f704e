"""The dual-attention seed ("Dual-Attention Global Video Representation Learning for Parameter
Efficient Text-Video Retrieval"): how its flags are read here. Its own code is not public; this
module is the one place that interprets them, so it can be corrected when the code appears.

The seed trains with ``--frame_per_seg 2-4-12 --seg_num 6-3-1 --seg_layer 8-9-10 --sel_layer 6
--alpha 0.4`` on a frozen ViT-B/32 and says it builds on TempMe and DGL. Read as:

- ``frame_per_seg`` / ``seg_num`` / ``seg_layer``: TempMe's progressive cross-frame merging. At
  layer ``seg_layer[i]`` the frames are grouped into ``seg_num[i]`` segments of
  ``frame_per_seg[i]`` frames (so frame_per_seg x seg_num = frames, and each segment size divides
  the next). That is TempMe's ``merge_layer 8-9-10`` with ``merge_frame_num`` = the ratios of
  successive segment sizes (2, 4/2, 12/4 = 2-2-3), its default; TempMe's other settings (ToMe r 2
  before the first segment layer, merge proportions 30/10 %, per-frame position embeddings, LoRA
  dim 8 on q/k/v of both towers) are kept.
- ``sel_layer``: the layer at which DGL's global video prompts are selected into the sequence.
  From that layer on, every layer runs DGL's global-local ("dual") attention: the global prompts
  attend to every token of the video, each frame (each segment, once frames are merged) attends
  to its own tokens and the global prompts. Earlier layers are TempMe's alone.
- ``alpha``: the weight of the global video representation against the frame-level one. The
  score is alpha x cos(text, global) + (1 - alpha) x cos(text, meanP of the frame features),
  where the global feature is the first global prompt after ``ln_post`` and the projection
  (DGL's ``global_prompt0``) and the frame features are the class tokens TempMe keeps per frame.

Trainable: TempMe's LoRA and frame position embeddings, DGL's global prompts.

As a method: ``--peft dual`` with a loose head and the cosine; TempMe's update (``tempme-adamw``);
its LoRA is TempMe's. Padding follows TempMe and DGL (no frame mask inside the encoder under
``reference``). Reference: the seed's README (its code is not public); TempMe's and DGL's code for
the parts it names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.merge_schedule import MergeSchedule, merge_percentages, parse_dashes
from model.methods.dgl import global_vector_problem
from model.methods.registry import Method, register
from model.methods.tempme import blockwise_encoder_problem, schedule_problem
from model.options import option


@dataclass(frozen=True)
class SeedFlags:
    frame_per_seg: str = "2-4-12"
    seg_num: str = "6-3-1"
    seg_layer: str = "8-9-10"
    sel_layer: int = 6
    alpha: float = 0.4


@dataclass(frozen=True)
class SeedPlan:
    schedule: MergeSchedule
    prompt_layer: int
    alpha: float


def interpret(
    flags: SeedFlags, max_frames: int, tome_r: int, cross_proportion: float, intra_proportion: float, frame_pos: bool
) -> SeedPlan:
    """The seed's flags as a TempMe schedule, the layer global prompts join at, and alpha."""
    sizes = parse_dashes(flags.frame_per_seg, "frame-per-seg")
    counts = parse_dashes(flags.seg_num, "seg-num")
    layers = parse_dashes(flags.seg_layer, "seg-layer")
    if not (len(sizes) == len(counts) == len(layers)) or not sizes:
        raise ValueError("--frame-per-seg, --seg-num and --seg-layer need the same number of entries")
    for size, count in zip(sizes, counts, strict=True):
        if size * count != max_frames:
            raise ValueError(f"--frame-per-seg x --seg-num must give the {max_frames} frames per clip at every segment layer: "
                             f"{size} x {count} = {size * count}")  # fmt: skip
    factors, previous = [], 1
    for size in sizes:
        if size <= previous or size % previous:
            raise ValueError(f"--frame-per-seg {flags.frame_per_seg}: each segment size must be a larger multiple of the one before")
        factors.append(size // previous)
        previous = size
    if not 0.0 <= flags.alpha <= 1.0:
        raise ValueError(f"--alpha weighs the global representation against the frame-level one: between 0 and 1, not {flags.alpha}")
    if flags.sel_layer < 0:
        raise ValueError("--sel-layer must be a layer index (0-based)")
    schedule = MergeSchedule(tome_r, layers, tuple(factors), cross_proportion, intra_proportion, frame_pos)
    return SeedPlan(schedule, flags.sel_layer, flags.alpha)


@dataclass(kw_only=True)
class DualAttentionOptions:
    """The seed's flags, read by :func:`interpret`."""

    frame_per_seg: str = option("2-4-12", "the seed's --frame_per_seg: frames per segment at each segment layer")
    seg_num: str = option("6-3-1", "the seed's --seg_num: segments at each segment layer")
    seg_layer: str = option("8-9-10", "the seed's --seg_layer: layers where the segments form")
    sel_layer: int = option(6, "the seed's --sel_layer: layer where the global prompts join (dual attention from there on)")
    alpha: float = option(0.4, "the seed's --alpha: score = alpha cos(text, global) + (1 - alpha) cos(text, frame-level)")

    def seed_plan(self) -> SeedPlan:
        """The seed's flags as read here, with TempMe's merging settings (--peft dual)."""
        cross, intra = merge_percentages(self.merge_token_proportion)
        flags = SeedFlags(self.frame_per_seg, self.seg_num, self.seg_layer, self.sel_layer, self.alpha)
        return interpret(flags, self.max_frames, self.tome_r, cross, intra, self.frame_pos)


@register
class DualAttention(Method):
    name = "dual"
    title = "The dual-attention seed: Dual-Attention Global Video Representation Learning for PETVR"
    reference = "its README only (code not public); TempMe's and DGL's code for the parts it builds on"
    options = DualAttentionOptions
    peft_modes = ("dual",)
    optimizer = "tempme-adamw"

    def is_active(self, config: Any) -> bool:
        return config.peft == "dual"

    def problem(self, config: Any) -> str | None:
        return schedule_problem(lambda: config.seed_plan().schedule, config) or global_vector_problem(config)

    def run_problem(self, config: Any) -> str | None:
        return blockwise_encoder_problem(config)

    def prepare_clip(self, clip: Any, config: Any) -> None:
        from model.peft import add_tempme_lora

        add_tempme_lora(clip, config.lora_rank)

    def adapter(self, clip: Any, config: Any) -> Any:
        from model.tempme import MergingVideoEncoder

        plan = config.seed_plan()
        return MergingVideoEncoder(clip, plan.schedule, config.max_frames, config.dgl_global_prompts, plan.prompt_layer, plan.alpha)
