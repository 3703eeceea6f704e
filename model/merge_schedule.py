"""TempMe's merge schedule: at which layers frames join into segments and how many tokens merge
at each layer (LunarShen/TempMe ``modules/modeling.py`` ``get_video_feat``), read from its flags.

Its own module, free of torch, because the options are checked before CLIP is loaded (the TempMe
and dual-attention methods, model/methods/) and the encoder runs it (model/tempme.py).
"""

from __future__ import annotations

from dataclasses import dataclass


def parse_dashes(text: str, what: str) -> tuple[int, ...]:
    """'8-9-10' -> (8, 9, 10), TempMe's way of writing lists on the command line."""
    try:
        return tuple(int(part) for part in str(text).split("-") if part != "")
    except ValueError:
        raise ValueError(f"--{what} takes numbers joined by '-', like 8-9-10, not {text!r}") from None


@dataclass(frozen=True)
class LayerPlan:
    join: int  # groups joined into one before attention (1: none)
    before: int  # tokens merged after the join, before attention
    after: int  # tokens merged after attention


@dataclass(frozen=True)
class MergeSchedule:
    tome_r: int = 2
    merge_layers: tuple[int, ...] = (8, 9, 10)
    merge_frames: tuple[int, ...] = (2, 2, 3)
    cross_proportion: float = 0.30
    intra_proportion: float = 0.10
    frame_pos: bool = True

    def problem(self, max_frames: int, layers: int | None = None) -> str | None:
        """``layers``: the vision tower's depth, once known (the options are checked before CLIP is loaded)."""
        if not self.merge_layers or len(self.merge_layers) != len(self.merge_frames):
            return "--merge-layers and --merge-frames need the same number of entries (at least one)"
        if list(self.merge_layers) != sorted(set(self.merge_layers)) or self.merge_layers[0] < 0:
            return f"--merge-layers must increase, 0-based, not {self.merge_layers}"
        if layers is not None and self.merge_layers[-1] >= layers:
            return f"--merge-layers must lie within the vision tower's {layers} layers (0-based), not {self.merge_layers}"
        frames = max_frames
        for factor in self.merge_frames:
            if factor < 1 or frames % factor:
                return f"--merge-frames {'-'.join(map(str, self.merge_frames))} does not divide {max_frames} frames step by step"
            frames //= factor
        if self.tome_r < 0 or not 0 <= self.cross_proportion < 1 or not 0 <= self.intra_proportion < 1:
            return "--tome-r must be >= 0 and --merge-token-proportion percentages below 100"
        return None

    def frames_before_joins(self, max_frames: int) -> list[int]:
        """Frames (groups per video) entering each merge layer: TempMe's ``frame_num_list``."""
        counts, frames = [], max_frames
        for factor in self.merge_frames:
            counts.append(frames)
            frames //= factor
        return counts

    def layer_plan(self, layer: int, tokens: int, protected: int) -> LayerPlan:
        """TempMe's per-layer token counts (``get_video_feat``), from the group's current size."""
        if layer in self.merge_layers:
            factor = self.merge_frames[self.merge_layers.index(layer)]
            joined, mergeable = tokens * factor, (tokens - protected) * factor
            before = min(mergeable // 2, int(joined * self.cross_proportion))
            after = min((mergeable - before) // 2, int((joined - before) * self.intra_proportion))
            return LayerPlan(factor, before, after)
        if layer < self.merge_layers[0]:
            return LayerPlan(1, 0, self.tome_r)
        return LayerPlan(1, 0, min((tokens - protected) // 2, int(tokens * self.intra_proportion)))


def merge_percentages(text: str) -> tuple[float, float]:
    """TempMe's ``merge_token_proportion 30-10`` -> (0.30, 0.10), computed as TempMe does (int / 100)."""
    parts = parse_dashes(text, "merge-token-proportion")
    if len(parts) != 2:
        raise ValueError("--merge-token-proportion takes two percentages, like 30-10")
    return parts[0] / 100, parts[1] / 100


def schedule_from_flags(tome_r: int, merge_layers: str, merge_frames: str, proportion: str, frame_pos: bool) -> MergeSchedule:
    cross, intra = merge_percentages(proportion)
    return MergeSchedule(
        tome_r, parse_dashes(merge_layers, "merge-layers"), parse_dashes(merge_frames, "merge-frames"), cross, intra, frame_pos
    )
