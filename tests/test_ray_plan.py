"""The parts of the Ray distributors that need no cluster: per-node concurrency, what travels to the
workers, the dry run of a build plan, per-node manifest figures, and refusals at the command line."""

from __future__ import annotations

import json

import pytest

from pipeline.__main__ import main as pipeline_main
from runtime.ray_cluster import RESOURCE_UNITS, cpus_per_task, forwarded_environment
from shards.manifest import UnitRecord, _add_node_figures, without_timing


@pytest.mark.parametrize(
    "workers,nodes,expected_per_node",
    [(0, [16.0], [16]), (4, [16.0], [4]), (4, [16.0, 8.0], [4, 2]), (6, [16.0], [6]), (3, [16.0], [3]), (7, [16.0, 5.0], [7, 2]),
     (2, [1.0], [2]), (3, [2.0, 1.0], [3, 1])],
)  # fmt: skip
def test_no_node_runs_more_than_workers_tasks(workers, nodes, expected_per_node):
    """Ray fits (node units // task units) tasks on a node, in units of 1e-4 CPU: never above --workers,
    exactly --workers on the largest node."""
    share = cpus_per_task(workers, nodes)
    assert share == 1.0 if workers == 0 else share > 0
    units = round(share * RESOURCE_UNITS)
    assert units / RESOURCE_UNITS == share  # within Ray's precision
    fits = [round(cpus * RESOURCE_UNITS) // units for cpus in nodes]
    assert fits == expected_per_node
    if workers:
        assert max(fits) <= workers


def test_only_storage_and_ffmpeg_settings_travel_to_workers():
    environ = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k", "PIPELINE_FFMPEG": "/opt/ffmpeg", "HOME": "/root",
               "AWS_REGION": ""}  # fmt: skip
    assert forwarded_environment(environ) == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k", "PIPELINE_FFMPEG": "/opt/ffmpeg"}


def _annotations(tmp_path, videos: int) -> tuple[str, str]:
    folder = tmp_path / "videos"
    folder.mkdir()
    with open(tmp_path / "list.jsonl", "w") as handle:
        for i in range(videos):
            (folder / f"v{i:05d}.mp4").touch()
            handle.write(json.dumps({"video": f"v{i:05d}.mp4", "captions": [f"caption {i}"], "split": "test"}) + "\n")
    return str(tmp_path / "list.jsonl"), str(folder)


def test_dry_run_reports_the_plan_and_writes_nothing(tmp_path, capsys):
    annotations, videos = _annotations(tmp_path, 250)
    out = tmp_path / "out"
    args = ["build", "--annotations", annotations, "--videos", videos, "--out", str(out), "--samples-per-shard", "100", "--dry-run"]
    assert pipeline_main([*args, "--distributor", "ray"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["units"] == summary["ray_tasks"] == summary["units_to_build"] == 3
    assert summary["videos"] == summary["videos_to_build"] == 250
    assert 0 < summary["task_argument_bytes"]["max"] <= summary["task_argument_bytes"]["total"]
    assert summary["driver_peak_mib"] > 0
    assert not out.exists()


def test_ray_refuses_a_job_split(tmp_path, capsys):
    annotations, videos = _annotations(tmp_path, 3)
    code = pipeline_main(["build", "--annotations", annotations, "--videos", videos, "--out", str(tmp_path / "o"), "--distributor", "ray",
                          "--num-jobs", "2", "--job-index", "0"])  # fmt: skip
    assert code == 2 and "--distributor ray schedules the whole build itself" in capsys.readouterr().err


def test_manifest_sums_units_per_node_and_without_timing_drops_them():
    nodes: dict = {}
    a = {"host": "h", "ip": "10.0.0.1", "ray_node_id": "aaa"}
    for unit, node, keys, failures, seconds in ((0, a, ["x", "y"], [], 2.0), (1, a, ["z"], [{"video_id": "w"}], 1.0),
                                               (2, {"host": "h"}, ["q"], [], 0.5)):  # fmt: skip
        _add_node_figures(nodes, UnitRecord(unit=unit, keys=keys, failures=failures, node=node, wall_seconds=seconds))
    first = nodes[("h", "10.0.0.1", "aaa")]
    assert (first["units"], first["videos"], first["samples"], first["failures"], first["unit_seconds"]) == (2, 4, 3, 1, 3.0)
    assert nodes[("h", "", "")]["ip"] is None
    manifest = {"shards": [], "totals": {}, "nodes": list(nodes.values()), "num_samples": 4}
    assert without_timing(manifest) == {"shards": [], "totals": {}, "num_samples": 4}
