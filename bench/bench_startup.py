"""How long each command takes to answer ``--help``, as a whole process, beside the interpreter's own start-up
(``python -c pass``) in the same run: the median of ``--repeats`` runs each, and the ratio. Also how long
``pipeline build`` takes from its start to its first decode: ffmpeg is a shim (``PIPELINE_FFMPEG``) that
notes the time it is started with an input, then runs the real one. Where Hugging Face ``transformers`` is
installed, also the model stack's import (``import model.backbone``, which every training, evaluation and
search command does after its parse) beside the same import with transformers imported first, which open_clip
then uses as it did before model/open_clip_import.py skipped it.

    python -m bench.bench_startup [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.cli import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [["pipeline", "--help"], ["pipeline", "build", "--help"], ["search.export", "--help"], ["eval.card", "--help"], ["train", "--help"],
            ["eval", "--help"], ["search", "--help"], ["search.index", "--help"], ["search.serve", "--help"], ["tools.demo", "--help"],
            ["tools.inspect_shards", "--help"]]  # fmt: skip


def seconds(argv: list[str], repeats: int) -> float:
    """The median wall time of ``argv`` as a whole process."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, check=True, timeout=300)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


SHIM = """#!/bin/sh
case " $* " in *" -i "*) python3 -c 'import time; print(time.time())' >> "{stamps}" ;; esac
exec "{ffmpeg}" "$@"
"""


def seconds_to_first_decode(repeats: int) -> float:
    """The median time from starting ``pipeline build`` (one small video) to its first ffmpeg run with an input."""
    from pipeline.ffmpeg_binary import ffmpeg_executable
    from tools.make_sample_data import make_sample_data

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        make_sample_data(os.path.join(tmp, "data"), num_videos=1, seed=0)
        stamps, shim = os.path.join(tmp, "stamps"), os.path.join(tmp, "ffmpeg")
        Path(shim).write_text(SHIM.format(stamps=stamps, ffmpeg=ffmpeg_executable()))
        os.chmod(shim, 0o755)
        for attempt in range(repeats):
            Path(stamps).write_text("")
            command = [sys.executable, "-m", "pipeline", "build", "--annotations", os.path.join(tmp, "data", "annotations.jsonl"), "--videos",
                       os.path.join(tmp, "data", "videos"), "--out", os.path.join(tmp, f"out{attempt}"), "--workers", "1", "--no-progress"]  # fmt: skip
            started = time.time()
            subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=300, env={**os.environ, "PIPELINE_FFMPEG": shim})
            first = min(float(line) for line in Path(stamps).read_text().split())
            times.append(first - started - shim_overhead())
    return statistics.median(times)


def shim_overhead() -> float:
    """The shim's own python3 start before it notes the time (taken away from the build's figure)."""
    started = time.time()
    noted = float(subprocess.run(["python3", "-c", "import time; print(time.time())"], capture_output=True, text=True, check=True).stdout)
    return noted - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_startup", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command; the median is reported")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    rows = []
    for command in COMMANDS:  # the baseline is timed beside each command, so a busy moment hits both
        baseline = seconds([sys.executable, "-c", "pass"], args.repeats)
        took = seconds([sys.executable, "-m", *command], args.repeats)
        rows.append({"command": "python -m " + " ".join(command), "seconds": took, "python_c_pass": baseline, "over_start_up": took - baseline,
                     "ratio": took / baseline})  # fmt: skip
        print(f"{rows[-1]['command']:38s} {took:6.3f} s   python -c pass {baseline:6.3f} s   +{took - baseline:6.3f} s   {took / baseline:5.1f}x")
    baseline = seconds([sys.executable, "-c", "pass"], args.repeats)
    took = seconds_to_first_decode(args.repeats)
    rows.append({"command": "python -m pipeline build: first decode", "seconds": took, "python_c_pass": baseline,
                 "over_start_up": took - baseline, "ratio": took / baseline})  # fmt: skip
    print(f"{rows[-1]['command']:38s} {took:6.3f} s   python -c pass {baseline:6.3f} s   +{took - baseline:6.3f} s   {took / baseline:5.1f}x")
    if importlib.util.find_spec("transformers") is not None:
        baseline = seconds([sys.executable, "-c", "import transformers, model.backbone"], args.repeats)
        took = seconds([sys.executable, "-c", "import model.backbone"], args.repeats)
        rows.append({"command": "import model.backbone (transformers skipped)", "seconds": took, "with_transformers": baseline,
                     "saved": baseline - took, "ratio": took / baseline})  # fmt: skip
        print(f"{rows[-1]['command']:38s} {took:6.3f} s   with transformers {baseline:6.3f} s   -{baseline - took:6.3f} s   {took / baseline:5.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
