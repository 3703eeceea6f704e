"""Which of a shard sample's frames the model sees: the builder's own rule, read from the build.

A shard keeps at most the builder's ``--max-frames`` frames per clip, already chosen with
CLIP4Clip's rule (``pipeline/sampling.py``: head, tail or ``linspace``). When training or
evaluating with fewer frames than were built, the same rule picks among the stored frames,
so ``--max-frames 8`` on a 12-frame build spreads 8 frames over the whole clip (CLIP4Clip's
``slice_framepos=2``) instead of keeping the first two thirds of it. The rule is read from
the build's manifest; shards given as a bare pattern of tar URLs (no manifest) use the
builder's default, ``uniform``.

Exact equivalence with CLIP4Clip when training with N frames needs a build with
``--max-frames N``: linspace over 12 stored frames is linspace over the clip's candidates
only when N divides the spacing evenly; README says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.sampling import SlicePosition, select_frames
from shards.manifest import MANIFEST_NAME, read_manifest
from shards.sample_format import frame_members
from shards.storage import Store


class ShardSettingsError(ValueError):
    """Shards built with settings the model cannot use; names the shards and the setting."""


@dataclass(frozen=True)
class FrameRule:
    max_frames: int = 12
    slice_position: SlicePosition = SlicePosition.UNIFORM

    def __post_init__(self) -> None:
        object.__setattr__(self, "slice_position", SlicePosition(self.slice_position))  # "tail" from JSON or a flag

    def members(self, sample: dict) -> list[str]:
        """The sample's frame fields the model sees, in time order."""
        names = frame_members(sample)
        return [names[i] for i in select_frames(len(names), self.max_frames, self.slice_position)]


def build_settings(location: str) -> dict | None:
    """The builder's settings for a build folder / prefix with a manifest; None for tar URLs."""
    location = location.rstrip("/")
    if location.endswith(".tar") or "{" in location:
        return None
    store = Store(location)
    if not store.exists(MANIFEST_NAME):
        return None
    return read_manifest(store).get("settings")


def frame_rule_for(location: str, max_frames: int, image_size: int | None) -> FrameRule:
    """The rule for ``location``'s shards, refusing frames smaller than the model's input
    (upscaling them would train on blurred pixels that CLIP4Clip never sees)."""
    settings = build_settings(location)
    if settings is None:
        return FrameRule(max_frames)
    short_side = settings.get("short_side") or 0
    if image_size and 0 < short_side < image_size:
        raise ShardSettingsError(
            f"{location}: frames were built with --short-side {short_side}, smaller than the model's "
            f"{image_size}px input; rebuild with --short-side {image_size} (or larger)"
        )
    return FrameRule(max_frames, SlicePosition(settings.get("slice_position", SlicePosition.UNIFORM.value)))
