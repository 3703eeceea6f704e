"""Training-input clips/s on one CPU worker: shard stream vs CLIP4Clip-style loading.

Baseline (CLIP4Clip's data loader): for every sample, open the pre-compressed 3 fps mp4
with OpenCV, seek to the first frame of each second, keep linspace(0, n-1, 12), and apply
its PIL transform (bicubic resize of the short side to 224, centre crop, to tensor,
normalise) -> float (12, 3, 224, 224) + mask. The 3 fps mp4s are made beforehand, as
CLIP4Clip's compress step does, and are not timed.

Ours (train/data.py): read the shard (frames already sampled and sized at build time),
decode the JPEGs, centre crop -> uint8 (12, 3, 224, 224) + mask; normalisation happens on
the accelerator, so it is not part of the CPU cost (noted beside the result).

Same videos, same process, one core, alternating passes; median of the passes.

    python -m bench.bench_stream [--num-videos 48] [--passes 3]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import tempfile
import time

import cv2
import torch
from PIL import Image
from torchvision import transforms

from bench.clip4clip_baseline import compress_3fps, frames_each_second
from model.clip_decode import decode_clip
from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from pipeline.sampling import SlicePosition, select_frames
from runtime.cli import HelpFormatter
from shards.reader import iter_samples, shard_urls
from shards.storage import Store
from tools.make_sample_data import make_sample_data

CLIP4CLIP_TRANSFORM = transforms.Compose(
    [
        transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    ]
)


def clip4clip_load(path: str, max_frames: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    images = [CLIP4CLIP_TRANSFORM(Image.fromarray(frame)) for frame in frames_each_second(path)]
    kept = select_frames(len(images), max_frames, SlicePosition.UNIFORM)
    video = torch.zeros(max_frames, 3, 224, 224)
    video[: len(kept)] = torch.stack([images[i] for i in kept])
    mask = torch.zeros(max_frames, dtype=torch.bool)
    mask[: len(kept)] = True
    return video, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--num-videos", type=int, default=48)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as root:
        make_sample_data(root, num_videos=args.num_videos, broken=False)
        records = load_annotations(os.path.join(root, "annotations.jsonl"))
        build_shards(records, os.path.join(root, "videos"), Store(os.path.join(root, "shards")), ExtractionSettings(),
                     BuildOptions(samples_per_shard=16, workers=2, show_progress=False))  # fmt: skip
        compressed = os.path.join(root, "compressed")
        os.makedirs(compressed)
        for video in sorted(glob.glob(os.path.join(root, "videos", "*.mp4"))):
            compress_3fps(video, os.path.join(compressed, os.path.basename(video)))
        mp4s = sorted(glob.glob(os.path.join(compressed, "*.mp4")))
        urls = shard_urls(os.path.join(root, "shards"))
        timings: dict[str, list[float]] = {"clip4clip_opencv": [], "shard_stream": []}
        counts = {}
        for index in range(args.passes):
            order = list(timings) if index % 2 == 0 else list(reversed(timings))
            for name in order:
                start = time.perf_counter()
                if name == "shard_stream":
                    counts[name] = sum(1 for sample in iter_samples(urls) if decode_clip(sample, 12, 224)[1].any())
                else:
                    counts[name] = sum(1 for path in mp4s if clip4clip_load(path)[1].any())
                timings[name].append(time.perf_counter() - start)
    assert counts["shard_stream"] == counts["clip4clip_opencv"] == args.num_videos
    result = {name: {"clips_per_s": args.num_videos / statistics.median(t), "seconds": t} for name, t in timings.items()}
    result["ratio"] = result["shard_stream"]["clips_per_s"] / result["clip4clip_opencv"]["clips_per_s"]
    result["num_videos"] = args.num_videos
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
