"""Building shards and indexing on a real Ray cluster: ``ray start --head`` plus worker nodes on loopback.

What a cluster does to a build, each done here the way it happens: a worker node lost mid-shard
(SIGKILL to its raylet, agents and workers), the driver's whole process group killed, a worker that
dies on one video every time. The shards and the manifest (apart from timing and per-node fields)
must equal a local build's byte for byte; the index must equal a single process's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from search.index import main as index_main
from search.index_format import VideoIndex
from shards.manifest import without_timing
from tests.conftest import REPO_ROOT
from tests.ray_cluster import RAY_ENV, LocalRayCluster, slow_ffmpeg

pytestmark = pytest.mark.integration
SHORT_SIDE = "112"  # small frames: the tests are about distribution, not pixels


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node (1 CPU) and a second node (1 CPU), each with its own raylet and workers."""
    cluster = LocalRayCluster()
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_node(num_cpus=1)
        yield cluster
    finally:
        cluster.shutdown()


def _build_command(dataset: Path, out: str, samples_per_shard: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "build", "--annotations", str(dataset / "annotations.jsonl"), "--videos",
            str(dataset / "videos"), "--out", out, "--samples-per-shard", str(samples_per_shard), "--short-side", SHORT_SIDE,
            "--no-progress", *extra]  # fmt: skip


def _env(ffmpeg: Path | None = None) -> dict[str, str]:
    env = os.environ | RAY_ENV
    if ffmpeg is not None:
        env["PIPELINE_FFMPEG"] = str(ffmpeg)
    return env


def _run(command: list[str], ffmpeg: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, env=_env(ffmpeg), capture_output=True, text=True, timeout=timeout)


_references: dict[int, Path] = {}


@pytest.fixture(scope="module")
def local_build(sample_dataset, tmp_path_factory):
    """The same build made by the local process pool, once per samples-per-shard."""

    def build(samples_per_shard: int) -> Path:
        if samples_per_shard not in _references:
            out = tmp_path_factory.mktemp(f"local{samples_per_shard}")
            result = _run(_build_command(sample_dataset, str(out), samples_per_shard, "--workers", "2"))
            assert result.returncode == 0, result.stderr
            _references[samples_per_shard] = out
        return _references[samples_per_shard]

    return build


def _assert_same_build(built: Path, reference: Path) -> None:
    names = sorted(p.name for p in reference.glob("*.tar"))
    assert names and sorted(p.name for p in built.glob("*.tar")) == names
    for name in [*names, "failures.jsonl"]:
        assert (built / name).read_bytes() == (reference / name).read_bytes(), name
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (built, reference)]
    assert without_timing(manifests[0]) == without_timing(manifests[1])
    assert not [p for p in built.rglob("*") if ".partial-" in p.name]


def test_ray_build_equals_the_local_build_byte_for_byte(ray_cluster, sample_dataset, local_build, tmp_path):
    """Units spread over both nodes (each decode takes 0.3 s, so one node cannot take them all)."""
    out = tmp_path / "ray"
    slow = slow_ffmpeg(tmp_path, 0.3)
    result = _run(_build_command(sample_dataset, str(out), 2, "--distributor", "ray", "--ray-address", ray_cluster.address), slow)
    assert result.returncode == 0, result.stderr
    assert "8 samples written, 5 failures" in result.stdout
    _assert_same_build(out, local_build(2))
    nodes = json.loads((out / "manifest.json").read_text())["nodes"]
    assert {n["ip"] for n in nodes} == {"127.0.0.2", "127.0.0.3"}
    assert sum(n["units"] for n in nodes) == 7 and sum(n["videos"] for n in nodes) == 13 and sum(n["failures"] for n in nodes) == 5
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == len({f["video_id"] for f in failures}) == 5  # each broken video once: recorded, not retried
    rerun = _run(_build_command(sample_dataset, str(out), 2, "--distributor", "ray", "--ray-address", ray_cluster.address))
    assert rerun.returncode == 0 and "nothing to build: 8 samples already in" in rerun.stdout and "video/s" not in rerun.stderr


def test_ray_build_into_a_bucket(ray_cluster, sample_dataset, local_build, s3_bucket, tmp_path):
    """Tasks upload to S3 with the driver's endpoint and credentials (forwarded to the workers)."""
    import boto3

    url = f"s3://{s3_bucket}/msr"
    result = _run(_build_command(sample_dataset, url, 2, "--distributor", "ray", "--ray-address", ray_cluster.address))
    assert result.returncode == 0, result.stderr
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    reference = local_build(2)
    for path in [*reference.glob("*.tar"), reference / "failures.jsonl"]:
        assert client.get_object(Bucket=s3_bucket, Key=f"msr/{path.name}")["Body"].read() == path.read_bytes(), path.name
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key="msr/manifest.json")["Body"].read())
    assert without_timing(manifest) == without_timing(json.loads((reference / "manifest.json").read_text()))


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_node_killed_mid_shard_loses_nothing(ray_cluster, sample_dataset, local_build, tmp_path):
    """A third node is killed (raylet, agents, workers: SIGKILL) while one of its workers has a shard
    half-written; Ray retries that unit on a surviving node and the build completes unchanged."""
    doomed = ray_cluster.add_node(num_cpus=2)
    out = tmp_path / "ray"
    slow = slow_ffmpeg(tmp_path, 1.0)
    driver = subprocess.Popen(_build_command(sample_dataset, str(out), 2, "--distributor", "ray", "--ray-address", ray_cluster.address),
                              cwd=REPO_ROOT, env=_env(slow), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    try:

        def doomed_node_writing() -> str | None:
            ours = ray_cluster.node_processes(doomed)
            held = ray_cluster.processes_holding(f"{out}/.shard-")
            return next((path for pid, path in held.items() if pid in ours), None)

        partial = _wait(doomed_node_writing, 120, "a worker of the doomed node to have a shard half-written")
        assert ray_cluster.kill_node(doomed) > 0
        stdout, stderr = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, stderr
    interrupted_unit = int(re.search(r"\.shard-(\d{6})", partial).group(1))
    record = json.loads((out / "_build" / "units" / f"{interrupted_unit:06d}.json").read_text())
    assert record["node"]["ip"] != doomed  # rebuilt elsewhere
    _assert_same_build(out, local_build(2))


def test_driver_killed_then_the_same_command_resumes(ray_cluster, sample_dataset, local_build, tmp_path):
    out = tmp_path / "ray"
    command = _build_command(sample_dataset, str(out), 1, "--distributor", "ray", "--ray-address", ray_cluster.address)
    driver = subprocess.Popen(command, cwd=REPO_ROOT, env=_env(slow_ffmpeg(tmp_path, 0.5)), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    units = out / "_build" / "units"
    try:
        _wait(lambda: units.is_dir() and len(list(units.glob("[0-9]*.json"))) >= 3, 120, "three finished units")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the whole driver process group, as a lost login node or scancel
        driver.wait()
    done_before = len(list(units.glob("[0-9]*.json")))
    assert 3 <= done_before < 13 and not (out / "manifest.json").exists()
    rerun = _run(command)
    assert rerun.returncode == 0, rerun.stderr
    skipped = int(re.search(r"skipped (\d+) already done", rerun.stdout).group(1))
    assert skipped >= done_before
    _assert_same_build(out, local_build(1))


def test_a_unit_whose_worker_always_dies_is_reported_not_retried_forever(ray_cluster, sample_dataset, local_build, tmp_path):
    """The decoder kills its worker on one video, every attempt: after --ray-max-retries the unit is
    named as failed, the others are built, no manifest claims a complete build; the rerun builds it."""
    out = tmp_path / "ray"
    command = _build_command(sample_dataset, str(out), 2, "--distributor", "ray", "--ray-address", ray_cluster.address)
    crashing = slow_ffmpeg(tmp_path, 0.0, crash_on="clip003")
    result = _run([*command, "--ray-max-retries", "1"], crashing)
    assert result.returncode == 1
    assert re.search(r"error: unit 1 not built: \w+", result.stderr), result.stderr
    assert "1 unit(s) failed after their retries" in result.stderr
    assert not (out / "manifest.json").exists()
    assert len(list((out / "_build" / "units").glob("[0-9]*.json"))) == 6
    rerun = _run(command)
    assert rerun.returncode == 0 and "built 1 unit(s), skipped 6 already done" in rerun.stdout, rerun.stderr
    _assert_same_build(out, local_build(2))


@pytest.fixture(scope="module")
def trained_run(local_build, tmp_path_factory):
    """A briefly trained meanP + WTI model (a fine stage: the index holds frames too)."""
    from train.config import parse_config
    from train.trainer import train

    root = tmp_path_factory.mktemp("ray_index")
    train(parse_config(["--train-shards", str(local_build(2)), "--output-dir", str(root / "run"), "--model", "tiny-ViT-112",
                        "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", "1", "--max-frames", "8", "--workers", "0",
                        "--lr", "1e-3", "--coef-lr", "1", "--sim-header", "meanP", "--interaction", "wti"]))  # fmt: skip
    return root / "run"


def test_index_on_ray_equals_the_single_process_index(ray_cluster, local_build, trained_run, tmp_path):
    """Same rows in the same order, same records and thumbnails; vectors equal within one fp16
    rounding step (both runs store fp16; only which process encoded a batch differs)."""
    shards = str(local_build(2))
    assert index_main(["--checkpoint", str(trained_run), "--shards", shards, "--out", str(tmp_path / "single"), "--part-videos", "3"]) == 0
    result = _run([sys.executable, "-m", "search.index", "--checkpoint", str(trained_run), "--shards", shards, "--out", str(tmp_path / "ray"),
                   "--part-videos", "3", "--distributor", "ray", "--ray-address", ray_cluster.address, "--ray-shards-per-task", "1"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["new_videos"] == summary["num_videos"] == 8 and summary["new_shards"] == 4 and summary["failed_shards"] == []
    single, ray = VideoIndex(str(tmp_path / "single")), VideoIndex(str(tmp_path / "ray"))
    assert len(ray.manifest["parts"]) == 4 > len(single.manifest["parts"])  # one task per shard, parts named in shard order
    assert [ray.record(i) for i in range(8)] == [single.record(i) for i in range(8)]
    assert [ray.thumbnail(i) for i in range(8)] == [single.thumbnail(i) for i in range(8)]
    np.testing.assert_allclose(ray.video_vectors(), single.video_vectors(), rtol=2**-10, atol=1e-4)
    for name in ("frames", "frame_mask"):
        stacked = [np.concatenate([np.load(tmp_path / run / "parts" / part / f"{name}.npy") for part in index.manifest["parts"]])
                   for run, index in (("ray", ray), ("single", single))]  # fmt: skip
        np.testing.assert_allclose(stacked[0].astype(np.float32), stacked[1].astype(np.float32), rtol=2**-10, atol=1e-4)
    same = ("model_sha256", "arrays", "row_shapes", "dim", "num_videos", "max_frames", "image_size")
    assert {k: ray.manifest[k] for k in same} == {k: single.manifest[k] for k in same}
    again = _run([sys.executable, "-m", "search.index", "--checkpoint", str(trained_run), "--shards", shards, "--out", str(tmp_path / "ray"),
                  "--distributor", "ray", "--ray-address", ray_cluster.address])  # fmt: skip
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1])["already_indexed_shards"] == 4


def test_retry_failures_on_ray_builds_only_the_failed_videos_into_new_shards(ray_cluster, sample_dataset, tmp_path):
    """A Ray build, then two broken files are replaced by good ones and --retry-failures runs on the
    cluster: those two become samples in new shards, the earlier shards are byte-identical, and the
    three still broken stay listed once each."""
    import shutil

    dataset = tmp_path / "dataset"
    shutil.copytree(sample_dataset, dataset)
    out = tmp_path / "ray"
    command = _build_command(dataset, str(out), 3, "--distributor", "ray", "--ray-address", ray_cluster.address)
    assert _run(command).returncode == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    for broken in ("broken_empty.mp4", "broken_missing.mp4"):
        shutil.copy(dataset / "videos" / "clip000.mp4", dataset / "videos" / broken)
    result = _run([*command, "--retry-failures"])
    assert result.returncode == 0, result.stderr
    assert "retry round 1: 5 failed video(s)" in result.stdout and "2 of the 5 retried video(s) now built, 3 still fail" in result.stdout
    after = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert {name: after[name] for name in before} == before and len(after) > len(before)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["video_id"] for f in failures) == ["broken_audio_only", "broken_random", "broken_truncated"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 10 and manifest["retries"][0]["recovered"] == 2
