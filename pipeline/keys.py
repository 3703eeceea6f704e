"""Sample keys that survive WebDataset's member grouping.

WebDataset splits a tar member name at its first dot into key and extension, so a video id
such as ``clip.v2`` or ``a/b`` would scatter one video over several samples. Keys keep only
``[A-Za-z0-9_-]`` and are made unique in annotation order, which makes them stable across
reruns and cluster jobs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_key(video_id: str) -> str:
    key = _UNSAFE.sub("_", video_id).strip("_")
    return key or "video"


def unique_keys(video_ids: Iterable[str]) -> list[str]:
    """One key per id, suffixing ``_2``, ``_3``... when two ids sanitise to the same key."""
    taken: set[str] = set()
    keys = []
    for video_id in video_ids:
        base = sanitize_key(video_id)
        key, counter = base, 1
        while key in taken:
            counter += 1
            key = f"{base}_{counter}"
        taken.add(key)
        keys.append(key)
    return keys
