"""A sample's frames as one small JPEG strip: the report's and the search page's picture of a video."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from shards.sample_format import frame_members


def frame_strip_jpeg(sample: dict, frames_per_strip: int = 4, height: int = 72, quality: int = 80) -> bytes:
    """``frames_per_strip`` evenly spaced frames of a shard sample side by side, ``height`` px high."""
    names = frame_members(sample)
    if not names:
        raise ValueError(f"sample {sample.get('__key__')!r} has no frames")
    chosen = [names[int(i)] for i in np.linspace(0, len(names) - 1, min(frames_per_strip, len(names)))]
    images = [Image.open(io.BytesIO(sample[name])).convert("RGB") for name in chosen]
    images = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    strip = Image.new("RGB", (sum(im.width for im in images) + 2 * (len(images) - 1), height), "white")
    x = 0
    for image in images:
        strip.paste(image, (x, 0))
        x += image.width + 2
    buffer = io.BytesIO()
    strip.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
