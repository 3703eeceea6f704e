"""How long each command takes to answer ``--help``, as a whole process, beside the interpreter's own start-up
(``python -c pass``) in the same run: the median of ``--repeats`` runs each, and the ratio.

    python -m bench.bench_startup [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from runtime.cli import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [["pipeline", "--help"], ["pipeline", "build", "--help"], ["search.export", "--help"], ["eval.card", "--help"], ["train", "--help"],
            ["eval", "--help"], ["search", "--help"], ["search.index", "--help"], ["search.serve", "--help"]]  # fmt: skip


def seconds(argv: list[str], repeats: int) -> float:
    """The median wall time of ``argv`` as a whole process."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, check=True, timeout=300)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


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
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
