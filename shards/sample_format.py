"""What one sample in a shard looks like, in one place for writer and readers.

Tar members of a sample share a key: ``KEY.00.jpg`` ... ``KEY.11.jpg`` (frames in time
order), ``KEY.json`` (metadata and all captions) and, when asked for, ``KEY.mp4`` (the
3 fps transcode). WebDataset groups them into ``{"__key__": KEY, "00.jpg": ..., "json": ...}``.
"""

from __future__ import annotations

import json
import re

FORMAT_VERSION = "clip4clip-wds/1"
_FRAME_MEMBER = re.compile(r"^(\d+)\.jpg$")


def frame_member(index: int) -> str:
    return f"{index:02d}.jpg"


def encode_sample(key: str, frames_jpeg: list[bytes], metadata: dict, transcode_mp4: bytes | None = None) -> dict:
    """A dict for ``webdataset.TarWriter`` with every value already bytes (no implicit encoders)."""
    if "." in key or "/" in key:
        raise ValueError(f"sample key {key!r} contains '.' or '/'; WebDataset would split it")
    sample: dict = {"__key__": key}
    for index, frame in enumerate(frames_jpeg):
        sample[frame_member(index)] = frame
    sample["json"] = json.dumps(metadata, ensure_ascii=False, sort_keys=True).encode("utf-8")
    if transcode_mp4 is not None:
        sample["mp4"] = transcode_mp4
    return sample


def frame_members(sample: dict) -> list[str]:
    """The frame fields of a decoded sample in time order (numeric, so 100 sorts after 99)."""
    indexed = [(int(m.group(1)), name) for name in sample if (m := _FRAME_MEMBER.match(name))]
    return [name for _, name in sorted(indexed)]


def sample_metadata(sample: dict) -> dict:
    raw = sample["json"]
    return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)


def complete_metadata(sample: dict) -> dict | None:
    """The sample's metadata when it and every frame it lists are present, else None.

    A shard cut off mid-sample (truncated upload, disk full) yields a sample missing its
    last members; such a sample must be skipped, never padded.
    """
    if "json" not in sample:
        return None
    try:
        metadata = sample_metadata(sample)
        expected = metadata["frames"]["count"]
    except (ValueError, KeyError, TypeError):
        return None
    return metadata if len(frame_members(sample)) == expected else None


def is_complete_sample(sample: dict) -> bool:
    return complete_metadata(sample) is not None


def usable_captions(sample: dict) -> tuple[list[str], str | None]:
    """(captions, None) for a sample a model can use, or ([], reason) with the skip counter
    to bump: "incomplete" or "no_caption". Parses the metadata once, for the hot path."""
    metadata = complete_metadata(sample)
    if metadata is None:
        return [], "incomplete"
    captions = metadata.get("captions") or []
    return (captions, None) if captions else ([], "no_caption")
