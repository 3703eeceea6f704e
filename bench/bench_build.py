"""Videos/s per core: this project's single-pass extraction vs CLIP4Clip's two-step way.

Baseline (CLIP4Clip): ``preprocess/compress_video.py`` writes a 3 fps mp4 with the short
side at 224 (ffmpeg, default x264 settings), then the data loader decodes it with OpenCV,
seeking to the first frame of each second, and keeps ``linspace(0, n-1, 12)`` of them. To
compare equal outputs the baseline also JPEG-encodes the kept frames, as our shards store.

Ours: one ffmpeg process (fps -> select -> scale) streaming only the kept frames as PPM.

Both run in one process (one core), over the same files, alternating method per video so
cache warmth and machine noise hit both alike.

    python -m bench.bench_build [--videos DIR] [--num-videos 48] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import platform
import statistics
import tempfile
import time

import cv2
from PIL import Image

from bench.clip4clip_baseline import compress_3fps, frames_each_second
from pipeline.extract import ExtractionSettings, extract_video
from pipeline.sampling import SlicePosition, select_frames
from runtime.cli import HelpFormatter
from tools.make_sample_data import make_sample_data


def clip4clip_two_step(path: str, scratch: str, max_frames: int = 12, quality: int = 95) -> int:
    """Compress to 3 fps mp4, decode with OpenCV, sample, JPEG-encode. Returns frames kept."""
    compressed = os.path.join(scratch, "compressed.mp4")
    compress_3fps(path, compressed)
    frames = frames_each_second(compressed)
    kept = select_frames(len(frames), max_frames, SlicePosition.UNIFORM)
    for index in kept:
        buffer = io.BytesIO()
        Image.fromarray(frames[index]).save(buffer, format="JPEG", quality=quality)
    return len(kept)


def single_pass(path: str, settings: ExtractionSettings) -> int:
    return len(extract_video(path, settings).frames_jpeg)


def run(paths: list[str], repeats: int) -> dict:
    settings = ExtractionSettings()
    times: dict[str, list[float]] = {"single_pass": [], "clip4clip_two_step": []}
    with tempfile.TemporaryDirectory() as scratch:
        for path in paths:
            # same work on both sides; recent ffmpeg's output "-r 3" pads 1-2 duplicate frames at
            # the end (17 frames for 5 s), the fps filter does not, so short clips may differ by 1
            ours, theirs = single_pass(path, settings), clip4clip_two_step(path, scratch)
            assert abs(ours - theirs) <= 1, (path, ours, theirs)
        for repeat in range(repeats):
            totals = {name: 0.0 for name in times}
            for i, path in enumerate(paths):
                order = ["single_pass", "clip4clip_two_step"]
                if (i + repeat) % 2:
                    order.reverse()
                for name in order:
                    start = time.perf_counter()
                    if name == "single_pass":
                        single_pass(path, settings)
                    else:
                        clip4clip_two_step(path, scratch)
                    totals[name] += time.perf_counter() - start
            for name, total in totals.items():
                times[name].append(total)
    result = {
        name: {"seconds_median": statistics.median(t), "videos_per_s": len(paths) / statistics.median(t)} for name, t in times.items()
    }
    result["speedup"] = result["single_pass"]["videos_per_s"] / result["clip4clip_two_step"]["videos_per_s"]
    result["num_videos"] = len(paths)
    result["repeats"] = repeats
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--videos", help="folder of videos (default: generate the sample set)")
    parser.add_argument("--num-videos", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as generated:
        if args.videos:
            paths = sorted(p for p in glob.glob(os.path.join(args.videos, "*")) if os.path.isfile(p))
        else:
            make_sample_data(generated, num_videos=args.num_videos, broken=False)
            paths = sorted(glob.glob(os.path.join(generated, "videos", "*.mp4")))
        cv2.setNumThreads(1)
        result = run(paths, args.repeats)
    print(json.dumps(result, indent=1))
    print(
        f"\n| method | videos/s (1 core) |\n|---|---|\n| CLIP4Clip two-step (compress mp4 + OpenCV decode) | "
        f"{result['clip4clip_two_step']['videos_per_s']:.2f} |\n| single pass (this project) | "
        f"{result['single_pass']['videos_per_s']:.2f} |\n| ratio | {result['speedup']:.2f}x |"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
