"""Queries/s and latency of the search service under 1, 8 and 64 concurrent clients, next to the
old ``http.server`` page, on a 100k-video index, in one run.

- The model: ViT-B/32 (random weights: speed does not depend on them) trained for one step by
  ``python -m train`` on two generated clips, so the checkpoint is a real one; meanP, so a query
  costs its text encoding (ViT-B/32's text tower, the dominant cost) and the exact first stage
  over 100k vectors.
- The index: 100,000 rows in the real format (search/index_format.py ``PartWriter``), synthetic
  unit vectors (bench/bench_search.py ``synthetic``), the model's fingerprint, a thumbnail each.
- The servers: ``python -m search.serve`` (FastAPI + uvicorn, queries batched across requests)
  and the previous ``python -m eval.serve`` (``http.server``, one query at a time): the whole
  project at commit ``BASELINE_COMMIT``, unpacked from git and run unchanged. Each serves the same
  index on 127.0.0.1.
- The load: ``wrk`` (Debian's package) with C connections for ``--seconds`` each, every request a
  query drawn from 200 captions; wrk's own requests/s and latency percentiles. Both sides run at
  every concurrency, alternating which goes first.

    python -m bench.bench_search_service [--videos 100000] [--seconds 15] [--concurrency 1,8,64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runtime.cli import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE_COMMIT = "36cadf322bc9650dbc2c1cae7b6b1d43511fc30f"  # the last commit with the http.server page
WORDS = ("a man", "a woman", "a dog", "two children", "a red car", "a chef", "a band", "a cat", "an old man", "a girl")
ACTIONS = ("is cooking pasta", "plays guitar", "runs on a beach", "drives through a city", "talks to the camera", "dances", "swims")


def captions(count: int) -> list[str]:
    rng = np.random.default_rng(0)
    return [f"{WORDS[rng.integers(len(WORDS))]} {ACTIONS[rng.integers(len(ACTIONS))]} {i}" for i in range(count)]


def make_checkpoint(scratch: Path) -> Path:
    from pipeline.annotations import load_annotations
    from pipeline.build import BuildOptions, build_shards
    from pipeline.extract import ExtractionSettings
    from shards.storage import Store
    from tools.make_sample_data import make_sample_data
    from train.config import parse_config
    from train.trainer import train

    make_sample_data(str(scratch / "clips"), num_videos=2, seed=0, broken=False)
    records = load_annotations(str(scratch / "clips" / "annotations.jsonl"))
    build_shards(records, str(scratch / "clips" / "videos"), Store(str(scratch / "shards")), ExtractionSettings(max_frames=2),
                 BuildOptions(workers=1, show_progress=False))  # fmt: skip
    train(parse_config(["--train-shards", str(scratch / "shards"), "--output-dir", str(scratch / "run"), "--model", "ViT-B-32",
                        "--batch-size", "2", "--steps-per-epoch", "1", "--epochs", "1", "--max-frames", "2", "--workers", "0"]))  # fmt: skip
    return scratch / "run"


def make_index(run: Path, out: Path, videos: int) -> None:
    import torch
    from PIL import Image

    from bench.bench_search import synthetic
    from model.trained_model import load_trained_model
    from search.index_format import PartWriter
    from search.indexer import describe_model, write_index_manifest
    from search.options import IndexSettings
    from shards.storage import Store

    settings = IndexSettings(ann="never")
    description = describe_model(load_trained_model(str(run)), settings, torch.device("cpu"))
    vectors, _ = synthetic(videos, 1, 0.01)
    thumb = Path(out.parent / "thumb.jpg")
    Image.new("RGB", (384, 96), (90, 120, 150)).save(thumb, quality=80)
    jpeg = thumb.read_bytes()
    store = Store(str(out))
    store.ensure_root()
    texts = captions(videos)
    writer = PartWriter(store, "run00001-rank0000-00000", description["arrays"], {k: tuple(v) for k, v in description["row_shapes"].items()})
    writer.start_shard()
    for start in range(0, videos, 10_000):
        stop = min(videos, start + 10_000)
        records = [{"key": f"video{i:07d}", "shard": "synthetic.tar", "video_id": f"video{i:07d}", "captions": [texts[i]], "frames": 12,
                    "source_file": None, "duration_s": 10.0} for i in range(start, stop)]  # fmt: skip
        writer.add({"video": vectors[start:stop]}, records, [jpeg] * (stop - start))
    writer.finish_shard("synthetic.tar", {})
    writer.commit({"rank": 0, "world_size": 1, "model_sha256": description["model_sha256"]})
    write_index_manifest(store, description, settings)


def start_server(command: list[str], tree: Path) -> tuple[subprocess.Popen, int]:
    """One server from the source tree ``tree``; its first line names the port it got."""
    process = subprocess.Popen(command, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                               env=os.environ | {"PYTHONPATH": str(tree)})  # fmt: skip
    line = process.stdout.readline()
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)/", line).group(1))
    return process, port


def stop_server(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def wrk(port: int, connections: int, seconds: int, script: Path) -> dict:
    threads = min(connections, 2)
    output = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "60s", "--latency", "-s",
                             str(script), f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", output, re.MULTILINE))

    def ms(text: str) -> float:
        value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
        return round(float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit], 2)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {"queries_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), "p50_ms": ms(latency["50"]),
            "p99_ms": ms(latency["99"]), "requests": int(re.search(r"(\d+) requests in", output).group(1)),
            "error_responses": int(errors.group(1)) if errors else 0, "socket_errors": socket_errors.group(1) if socket_errors else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        run = make_checkpoint(scratch)
        make_index(run, scratch / "index", args.videos)
        queries = captions(200)
        script = scratch / "queries.lua"
        paths = ", ".join(json.dumps(f"/api/search?q={q.replace(' ', '+')}&k=10") for q in queries)
        script.write_text(f"local paths = {{{paths}}}\nrequest = function() return wrk.format('GET', paths[math.random(#paths)]) end\n")
        baseline = scratch / "baseline"
        baseline.mkdir()
        archive = subprocess.run(["git", "archive", BASELINE_COMMIT], cwd=REPO_ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        servers = {"fastapi_batched": ([sys.executable, "-m", "search.serve", "--index", str(scratch / "index"), "--port", "0"], REPO_ROOT),
                   "http_server_baseline": ([sys.executable, "-m", "eval.serve", "--index", str(scratch / "index"), "--port", "0"], baseline)}  # fmt: skip
        results: dict = {"videos": args.videos, "seconds": args.seconds, "cpus": os.cpu_count(), "model": "ViT-B-32 meanP, exact first stage"}
        for round_number, connections in enumerate(int(c) for c in args.concurrency.split(",")):
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for name in order:
                process, port = start_server(*servers[name])
                try:
                    wrk(port, connections, 3, script)  # warm-up: first queries, page cache, allocator
                    figures = wrk(port, connections, args.seconds, script)
                finally:
                    stop_server(process)
                results.setdefault(name, {})[str(connections)] = figures
                print(name, connections, json.dumps(figures), flush=True)
            ours, theirs = results["fastapi_batched"][str(connections)], results["http_server_baseline"][str(connections)]
            results.setdefault("ratio_queries_per_s", {})[str(connections)] = round(ours["queries_per_s"] / theirs["queries_per_s"], 2)
            time.sleep(1)
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
