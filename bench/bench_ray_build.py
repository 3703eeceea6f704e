"""Shard building on Ray vs the local process pool, and how the build plan scales to 1M videos.

1. Throughput: the same build (generated clips, the same settings and ``--workers``) through
   ``python -m pipeline build`` with the local pool and with ``--distributor ray`` on a Ray
   cluster already running on this machine (``ray start --head``, as users run one), alternated
   over repeats. Each figure is the whole command's wall time (Python start, planning, Ray
   connection, the build, the manifest), so the ratio is the overhead a user sees. Shards of both
   are checked byte-identical. The same command rerun with nothing left to build gives each
   side's fixed cost (start, plan, joining the cluster, merge).
2. Plan scaling: ``--dry-run --distributor ray`` on annotation lists of 10k, 100k and 1M videos
   (empty files in one folder: resolution lists the folder as a real build does), each in a fresh
   process: tasks, bytes of task arguments (what the driver ships per task), the driver's peak
   memory and the planning time.

    python -m bench.bench_ray_build [--num-videos 192] [--repeats 2] [--workers 2] [--plan-sizes 10000,100000,1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runtime.cli import HelpFormatter
from tests.ray_cluster import RAY_ENV, LocalRayCluster
from tools.make_sample_data import make_sample_data

REPO_ROOT = Path(__file__).resolve().parent.parent


def _build(dataset: Path, out: Path, workers: int, extra: list[str]) -> float:
    command = [sys.executable, "-m", "pipeline", "build", "--annotations", str(dataset / "annotations.jsonl"), "--videos",
               str(dataset / "videos"), "--out", str(out), "--samples-per-shard", "8", "--workers", str(workers), "--no-progress", *extra]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, env=os.environ | RAY_ENV, check=True, capture_output=True)
    return time.perf_counter() - started


def throughput(num_videos: int, repeats: int, workers: int, scratch: Path) -> dict:
    dataset = scratch / "data"
    make_sample_data(str(dataset), num_videos=num_videos, seed=0)
    videos = sum(1 for line in (dataset / "annotations.jsonl").read_text().splitlines() if line.strip())
    cluster = LocalRayCluster()
    cluster.start_head(num_cpus=os.cpu_count() or 1)
    times: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        for repeat in range(repeats):
            order = ["local", "ray"] if repeat % 2 == 0 else ["ray", "local"]
            for name in order:
                out = scratch / f"{name}{repeat}"
                extra = ["--distributor", "ray", "--ray-address", cluster.address] if name == "ray" else []
                times[name].append(_build(dataset, out, workers, extra))
        local, ray = scratch / "local0", scratch / "ray0"
        same = all(filecmp.cmp(local / p.name, ray / p.name, shallow=False) for p in local.glob("*.tar"))
        # the fixed cost of a command with nothing left to build: start, plan, (Ray: join the cluster), merge
        fixed = {"local": _build(dataset, local, workers, []),
                 "ray": _build(dataset, ray, workers, ["--distributor", "ray", "--ray-address", cluster.address])}  # fmt: skip
    finally:
        cluster.shutdown()
    result = {name: {"seconds_median": round(statistics.median(t), 2), "videos_per_s": round(videos / statistics.median(t), 2)}
              for name, t in times.items()}  # fmt: skip
    result.update(videos=videos, workers=workers, repeats=repeats, shards_identical=same,
                  rerun_nothing_to_build_s={name: round(t, 2) for name, t in fixed.items()},
                  ray_over_local=round(result["ray"]["videos_per_s"] / result["local"]["videos_per_s"], 3))  # fmt: skip
    return result


def plan_scaling(size: int, scratch: Path) -> dict:
    folder = scratch / f"plan{size}"
    videos = folder / "videos"
    videos.mkdir(parents=True)
    with open(folder / "list.jsonl", "w") as handle:
        for i in range(size):
            name = f"video{i:07d}.mp4"
            open(videos / name, "w").close()
            handle.write(json.dumps({"video": name, "captions": [f"a person does thing number {i}"] * 20, "split": "train"}) + "\n")
    command = [sys.executable, "-m", "pipeline", "build", "--annotations", str(folder / "list.jsonl"), "--videos", str(videos),
               "--out", str(folder / "out"), "--distributor", "ray", "--dry-run"]  # fmt: skip
    started = time.perf_counter()
    summary = json.loads(subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout)
    summary["plan_seconds"] = round(time.perf_counter() - started, 1)
    shutil.rmtree(folder)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--num-videos", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plan-sizes", default="10000,100000,1000000")
    parser.add_argument("--json")
    args = parser.parse_args()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory() as scratch:
        results["throughput"] = throughput(args.num_videos, args.repeats, args.workers, Path(scratch))
        print(json.dumps(results["throughput"]), flush=True)
        results["plan"] = []
        for size in (int(s) for s in args.plan_sizes.split(",") if s):
            results["plan"].append(plan_scaling(size, Path(scratch)))
            print(json.dumps(results["plan"][-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
