"""Text queries while 32 hostile clients upload: the search service's p50/p99 and memory, beside the same
service with no attack, in one run (issue 40's attacks at full size).

- The service: ``python -m search.serve`` with its default limits (``--api-key`` set), over an index of
  8 generated clips and a tiny meanP model trained for two steps (speed does not depend on the weights;
  ``--model ViT-B-32`` for the real text tower).
- The attackers, ``--clients`` of them (default 32) in four equal groups, each repeating its attack
  until the queries are done: 100 MB declared as ``Content-Length: 1000`` with ``Transfer-Encoding:
  chunked`` on the file route; 40 MB of chunked JSON on the vector route; a 7.7 KB mp4 declaring 10
  hours of 1080p (which held ~1 GB and a core for 120 s before); a raw H.264 stream with no duration
  in its header whose frames are an hour apart (decoded twice before).
- The measure: one client sends ``--queries`` text queries one after another, first with no attack,
  then under it; their latency (p50, p99, max), the service's peak RSS (sampled every 50 ms), the
  most ffmpeg children alive at once, and what the attackers were answered.

    python -m bench.bench_hostile_uploads [--clients 32] [--queries 200] [--model tiny-ViT-112] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

from pipeline.ffmpeg_binary import ffmpeg_executable
from runtime.cli import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-hostile-key-0123"
QUERIES = ("a red circle moves left", "a blue square moving up", "green shape going right", "a yellow circle slides down", "a square")


def make_collection(root: Path, model: str) -> Path:
    from pipeline.annotations import load_annotations
    from pipeline.build import BuildOptions, build_shards
    from pipeline.extract import ExtractionSettings
    from search.index import main as index_main
    from shards.storage import Store
    from tools.make_sample_data import make_sample_data
    from train.config import parse_config
    from train.trainer import train

    make_sample_data(str(root / "data"), num_videos=8, seed=0, broken=False)
    records = load_annotations(str(root / "data" / "annotations.jsonl"))
    build_shards(records, str(root / "data" / "videos"), Store(str(root / "shards")), ExtractionSettings(),
                 BuildOptions(samples_per_shard=2, workers=2, show_progress=False))  # fmt: skip
    train(parse_config(["--train-shards", str(root / "shards"), "--output-dir", str(root / "run"), "--model", model, "--batch-size", "4",
                        "--steps-per-epoch", "2", "--epochs", "1", "--max-frames", "8", "--workers", "0", "--sim-header", "meanP"]))  # fmt: skip
    assert index_main(["--checkpoint", str(root / "run"), "--shards", str(root / "shards"), "--out", str(root / "index")]) == 0
    return root / "index"


def make_attack_files(root: Path) -> dict[str, Path]:
    def generated(name: str, source: str, seconds: int, *extra: str) -> Path:
        subprocess.run([ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", source, "-t", str(seconds), "-c:v", "libx264",
                        "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra, "-y", str(root / name)], check=True)  # fmt: skip
        return root / name

    return {"long": generated("long.mp4", "color=gray:s=1920x1080:r=1/3600", 36000),
            "raw": generated("sparse.h264", "color=gray:s=1920x1080:r=1/3600", 36000, "-f", "h264")}  # fmt: skip


class Server:
    def __init__(self, index: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "search.serve", "--index", str(index), "--port", "0", "--api-key", KEY,
                                         "--query-encoder", "fp32"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, start_new_session=True)  # fmt: skip
        line = self.process.stdout.readline()
        self.port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        threading.Thread(target=lambda: collections.deque(self.process.stdout, maxlen=0), daemon=True).start()

    def rss(self) -> int:
        return next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS:"))  # fmt: skip

    def ffmpeg_children(self) -> int:
        out = subprocess.run(["ps", "--ppid", str(self.process.pid), "-o", "comm="], capture_output=True, text=True).stdout
        return sum("ffmpeg" in line for line in out.splitlines())

    def stop(self) -> None:
        import os
        import signal

        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)


def request(port: int, head: bytes, body_chunks=(), timeout: float = 180) -> int:  # noqa: ANN001
    """One request on a raw socket; the status answered (0 when the connection failed). Sending stops when the
    service closes the connection, and the answer is read meanwhile."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    status = [0]

    def read() -> None:
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            status[0] = int(data.split()[1])
        except OSError:
            pass

    reader = threading.Thread(target=read)
    reader.start()
    try:
        sock.sendall(head)
        for chunk in body_chunks:
            if not reader.is_alive():
                break
            sock.sendall(chunk)
    except OSError:
        pass
    reader.join(timeout)
    sock.close()
    return status[0]


def attackers(port: int, files: dict[str, Path], clients: int, stop: threading.Event, answers: collections.Counter) -> list[threading.Thread]:
    megabyte = b"100000\r\n" + b"\0" * 0x100000 + b"\r\n"
    json_block = b"100000\r\n" + b"[" * 0x100000 + b"\r\n"
    auth = f"Host: t\r\nX-API-Key: {KEY}\r\n"

    def upload(name: str) -> int:
        data = files[name].read_bytes()
        return request(port, f"POST /api/search/file?filename={files[name].name} HTTP/1.1\r\n{auth}Content-Length: {len(data)}\r\n\r\n".encode(), [data])

    attacks = {
        "chunked 100 MB file": lambda: request(port, f"POST /api/search/file HTTP/1.1\r\n{auth}Content-Length: 1000\r\nTransfer-Encoding: chunked\r\n\r\n".encode(),
                                               (megabyte for _ in range(100))),  # fmt: skip
        "chunked 40 MB JSON": lambda: request(port, f"POST /api/search HTTP/1.1\r\n{auth}Transfer-Encoding: chunked\r\n\r\n".encode(),
                                              (json_block for _ in range(40))),  # fmt: skip
        "10-hour mp4": lambda: upload("long"),
        "no-duration h264": lambda: upload("raw"),
    }

    def run(name: str) -> None:
        while not stop.is_set():
            answers[(name, attacks[name]())] += 1
            stop.wait(0.05)

    names = list(attacks)
    return [threading.Thread(target=run, args=(names[i % len(names)],), daemon=True) for i in range(clients)]


def query_latencies(port: int, count: int) -> list[float]:
    import http.client

    seconds = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for i in range(count):
        started = time.perf_counter()
        connection.request("GET", f"/api/search?q={urllib.parse.quote(QUERIES[i % len(QUERIES)])}&k=5", headers={"X-API-Key": KEY})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        seconds.append(time.perf_counter() - started)
    connection.close()
    return seconds


def service_health(port: int) -> dict:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("GET", "/api/health", headers={"X-API-Key": KEY})
    return json.loads(connection.getresponse().read())


def measure(server: Server, queries: int, attack: list[threading.Thread] | None) -> dict:
    peak = {"rss": server.rss(), "ffmpeg": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            peak["rss"] = max(peak["rss"], server.rss())
            peak["ffmpeg"] = max(peak["ffmpeg"], server.ffmpeg_children())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rss_before = server.rss()
    for thread in attack or []:
        thread.start()
    if attack:
        time.sleep(2)  # the attack under way before the first query
    latencies = np.array(query_latencies(server.port, queries)) * 1e3
    sampling.set()
    sampler.join()
    return {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)), "max_ms": float(latencies.max()),
            "rss_before_mb": rss_before / 2**20, "rss_peak_mb": peak["rss"] / 2**20, "ffmpeg_children_peak": peak["ffmpeg"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_hostile_uploads", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--clients", type=int, default=32, help="hostile clients at once")
    parser.add_argument("--queries", type=int, default=200, help="text queries measured in each phase")
    parser.add_argument("--model", default="tiny-ViT-112", help="the model of the index (its text tower is a query's cost)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as scratch:
        root = Path(scratch)
        index = make_collection(root, args.model)
        files = make_attack_files(root)
        server = Server(index)
        try:
            query_latencies(server.port, 20)  # warm
            quiet = measure(server, args.queries, None)
            stop, answers = threading.Event(), collections.Counter()
            attack = attackers(server.port, files, args.clients, stop, answers)
            attacked = measure(server, args.queries, attack)
            stop.set()
            for thread in attack:
                thread.join(timeout=120)
            health = service_health(server.port)
        finally:
            server.stop()
    result = {"clients": args.clients, "queries": args.queries, "model": args.model, "quiet": quiet, "attacked": attacked,
              "p99_ratio": attacked["p99_ms"] / quiet["p99_ms"], "answers": {f"{name}: {status}": n for (name, status), n in sorted(answers.items())},
              "query_decodes": health["query_decodes"]}  # fmt: skip
    print(f"text queries, {args.queries} each phase, model {args.model}:")
    for phase in ("quiet", "attacked"):
        row = result[phase]
        print(f"  {phase:9s} p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  max {row['max_ms']:7.1f} ms  "
              f"service RSS {row['rss_before_mb']:.0f} -> peak {row['rss_peak_mb']:.0f} MB  ffmpeg children at most {row['ffmpeg_children_peak']}")  # fmt: skip
    print(f"  p99 under attack / quiet: {result['p99_ratio']:.2f}x")
    print("  attackers were answered: " + ", ".join(f"{key} x{n}" for key, n in result["answers"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
