"""Generates a small, real video dataset: moving coloured shapes with several captions each.

Why synthetic: no dataset can be downloaded here, yet the builder, trainer and evaluator
need real encoded videos (H.264 in mp4, several aspect ratios and durations) and a task
with a known answer. Direction of motion is part of every caption, so a model that pools
frames without order (meanP) cannot separate "left to right" from "right to left" while a
temporal head can. A few broken inputs (truncated, random bytes, empty, audio only, and a
missing file) exercise the failure paths.

    python -m tools.make_sample_data --out sample_data [--num-videos 48] [--seed 0]

Writes ``videos/``, ``annotations.jsonl`` (all), ``train.jsonl`` and ``test.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
from dataclasses import dataclass

import ffmpeg
import numpy as np

from pipeline.ffmpeg_binary import ffmpeg_executable
from runtime.cli import HelpFormatter

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")
DIRECTIONS = {
    "left to right": ((0.1, 0.5), (0.9, 0.5), "to the right", "rightward"),
    "right to left": ((0.9, 0.5), (0.1, 0.5), "to the left", "leftward"),
    "top to bottom": ((0.5, 0.1), (0.5, 0.9), "downward", "down the screen"),
    "bottom to top": ((0.5, 0.9), (0.5, 0.1), "upward", "up the screen"),
}
SIZES = ((320, 240), (240, 320), (426, 240), (256, 256))
DURATIONS = (4.0, 7.0, 11.0, 16.0, 25.0)
SOURCE_FPS = 24


@dataclass(frozen=True)
class ClipSpec:
    name: str
    colour: str
    shape: str
    direction: str
    width: int
    height: int
    duration_s: float

    def captions(self) -> list[str]:
        _, _, short, adverb = DIRECTIONS[self.direction]
        return [
            f"a {self.colour} {self.shape} moves from {self.direction}",
            f"a {self.colour} {self.shape} slides {short}",
            f"the {self.shape} is {self.colour} and travels {adverb}",
        ]


def clip_specs(num_videos: int, durations: tuple[float, ...] = DURATIONS, sizes: tuple[tuple[int, int], ...] = SIZES) -> list[ClipSpec]:
    combos = [(c, s, d) for d in DIRECTIONS for s in SHAPES for c in COLOURS]
    specs = []
    for i in range(num_videos):
        colour, shape, direction = combos[i % len(combos)]
        width, height = sizes[i % len(sizes)]
        duration = durations[(i // len(sizes)) % len(durations)]
        specs.append(ClipSpec(f"clip{i:03d}", colour, shape, direction, width, height, duration))
    return specs


def is_test_clip(index: int) -> bool:
    """A quarter of the clips, chosen so that every test combination of colour, shape and
    direction also occurs in training (as another clip, with another size and duration)
    while, within the test set, each colour and shape appears with all four directions:
    a model that cannot see the direction of motion cannot rank the test set perfectly."""
    combos = len(COLOURS) * len(SHAPES) * len(DIRECTIONS)
    return index % 4 == (3 + index // combos) % 4


def render_frames(spec: ClipSpec, rng: np.random.Generator, fps: float = SOURCE_FPS) -> np.ndarray:
    """uint8 frames (T, H, W, 3): a textured still background and one moving shape."""
    count = int(round(spec.duration_s * fps))
    background = rng.integers(60, 140, size=(spec.height // 8 + 1, spec.width // 8 + 1, 3), dtype=np.uint8)
    background = np.kron(background, np.ones((8, 8, 1), dtype=np.uint8))[: spec.height, : spec.width]
    start, end, _, _ = DIRECTIONS[spec.direction]
    radius = max(8, min(spec.width, spec.height) // 8)
    ys, xs = np.mgrid[0 : spec.height, 0 : spec.width]
    colour = np.array(COLOURS[spec.colour], dtype=np.uint8)
    frames = np.empty((count, spec.height, spec.width, 3), dtype=np.uint8)
    for t in range(count):
        progress = t / max(count - 1, 1)
        cx = (start[0] + (end[0] - start[0]) * progress) * spec.width
        cy = (start[1] + (end[1] - start[1]) * progress) * spec.height
        if spec.shape == "circle":
            mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        else:
            mask = (np.abs(xs - cx) <= radius) & (np.abs(ys - cy) <= radius)
        frame = background.copy()
        frame[mask] = colour
        frames[t] = frame
    return frames


def encode_mp4(frames: np.ndarray, path: str, fps: float = SOURCE_FPS) -> None:
    height, width = frames.shape[1:3]
    args = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
        .output(path, vcodec="libx264", pix_fmt="yuv420p", preset="ultrafast", crf=20)
        .compile(cmd=ffmpeg_executable(), overwrite_output=True)
    )
    subprocess.run([args[0], "-nostdin", "-loglevel", "error", *args[1:]], input=frames.tobytes(), check=True, timeout=300)


def write_scenes_video(path: str, scenes: list[ClipSpec], fps: float = 6.0, seed: int = 0) -> list[tuple[float, float]]:
    """One long video made of several generated scenes in a row (all of the first scene's size), for
    finding a moment inside a long video; returns each scene's (start, end) seconds. A low frame rate
    keeps minutes of video small to make and to decode."""
    rng = np.random.default_rng(seed)
    width, height = scenes[0].width, scenes[0].height
    frames = np.concatenate([render_frames(dataclasses.replace(s, width=width, height=height), rng, fps) for s in scenes])
    encode_mp4(frames, path, fps)
    bounds = np.cumsum([0.0] + [s.duration_s for s in scenes])
    return [(float(a), float(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def write_broken_inputs(videos: str, donor_mp4: str) -> list[dict]:
    """Inputs that must land in failures.jsonl, each with plausible captions."""
    with open(donor_mp4, "rb") as handle:
        donor = handle.read()
    with open(os.path.join(videos, "broken_truncated.mp4"), "wb") as handle:
        handle.write(donor[: len(donor) // 3])  # moov atom is at the end: nothing decodable
    with open(os.path.join(videos, "broken_random.mp4"), "wb") as handle:
        handle.write(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    open(os.path.join(videos, "broken_empty.mp4"), "wb").close()
    audio_args = (
        ffmpeg.input("sine=frequency=440:duration=3", format="lavfi")
        .output(os.path.join(videos, "broken_audio_only.mp4"), acodec="aac")
        .compile(cmd=ffmpeg_executable(), overwrite_output=True)
    )
    subprocess.run([audio_args[0], "-nostdin", "-loglevel", "error", *audio_args[1:]], check=True, timeout=120)
    names = ["broken_truncated.mp4", "broken_random.mp4", "broken_empty.mp4", "broken_audio_only.mp4", "broken_missing.mp4"]
    return [{"video": name, "captions": ["a video that cannot be decoded"], "split": "train"} for name in names]


def make_sample_data(
    out: str,
    num_videos: int = 48,
    seed: int = 0,
    broken: bool = True,
    durations: tuple[float, ...] = DURATIONS,
    sizes: tuple[tuple[int, int], ...] = SIZES,
) -> list[dict]:
    videos = os.path.join(out, "videos")
    os.makedirs(videos, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries = []
    for i, spec in enumerate(clip_specs(num_videos, durations, sizes)):
        path = os.path.join(videos, f"{spec.name}.mp4")
        encode_mp4(render_frames(spec, rng), path)
        split = "test" if is_test_clip(i) else "train"
        entries.append(
            {
                "video": f"{spec.name}.mp4",
                "captions": spec.captions(),
                "split": split,
                "colour": spec.colour,
                "shape": spec.shape,
                "direction": spec.direction,
            }
        )
    if broken and entries:
        entries.extend(write_broken_inputs(videos, os.path.join(videos, entries[0]["video"])))
    for name, keep in (
        ("annotations.jsonl", lambda e: True),
        ("train.jsonl", lambda e: e["split"] == "train"),
        ("test.jsonl", lambda e: e["split"] == "test"),
    ):
        with open(os.path.join(out, name), "w", encoding="utf-8") as handle:
            for entry in filter(keep, entries):
                handle.write(json.dumps(entry) + "\n")
    return entries


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.make_sample_data", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-videos", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-broken", action="store_true", help="skip the deliberately broken inputs")
    args = parser.parse_args(argv)
    if args.num_videos < 1:
        parser.error(f"--num-videos must be at least 1, got {args.num_videos}")
    entries = make_sample_data(args.out, args.num_videos, args.seed, broken=not args.no_broken)
    print(f"wrote {len(entries)} annotation entries and videos under {args.out}")


if __name__ == "__main__":
    main()
