"""Peak memory of one extraction vs clip duration: does a worker's RSS grow with the clip?

Generates a tiny 64x48 source at 2 fps for each duration, extracts it (frames at short side
224, 12 kept) in a fresh Python process per run, and reports that process's max RSS (ffmpeg,
a child, is not counted: its memory does not depend on the clip's length). ``--repo`` runs
the same measurement against another checkout (e.g. a git worktree of an older commit), so
before and after come from one run.

    python -m bench.bench_extract_memory [--seconds 60 1800] [--repo PATH ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from pipeline.ffmpeg_binary import ffmpeg_executable
from runtime.cli import HelpFormatter

PEAK = """
import resource, sys
from pipeline.extract import ExtractionSettings, extract_video
video = extract_video(sys.argv[1], ExtractionSettings())
print(video.num_candidates, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def make_clip(path: str, seconds: int) -> None:
    source = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=2", "-t", str(seconds)]
    encode = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path]
    subprocess.run([ffmpeg_executable(), "-nostdin", "-y", "-loglevel", "error", *source, *encode], check=True)


def peak_mib(repo: str, clip: str) -> tuple[int, int]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(repo)}
    out = subprocess.run([sys.executable, "-c", PEAK, clip], capture_output=True, text=True, check=True, cwd=repo, env=env).stdout.split()
    return int(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--seconds", type=int, nargs="+", default=[60, 1800])
    parser.add_argument("--repo", nargs="+", default=["."], help="checkouts to measure (default: this one)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for seconds in args.seconds:
            clip = os.path.join(scratch, f"clip{seconds}.mp4")
            make_clip(clip, seconds)
            for repo in args.repo:
                candidates, mib = peak_mib(repo, clip)
                results.append({"repo": repo, "seconds": seconds, "candidates": candidates, "peak_rss_mib": mib})
    print(json.dumps(results, indent=1))
    print("\n| clip | " + " | ".join(args.repo) + " |\n|---|" + "---|" * len(args.repo))
    for seconds in args.seconds:
        row = [f"{r['peak_rss_mib']} MiB" for r in results if r["seconds"] == seconds]
        print(f"| {seconds} s | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
