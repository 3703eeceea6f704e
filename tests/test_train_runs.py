"""Trainer mechanics on CPU: 2-process gloo with uneven shards, SIGTERM/SIGKILL and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.backbone import load_clip
from model.checkpoint import load_checkpoint, save_checkpoint
from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from runtime.run_folder import latest_checkpoint
from shards.manifest import read_manifest
from shards.storage import Store
from tests.conftest import REPO_ROOT
from train.data import ClipStream, StreamConfig, StreamConfigError

TINY = ["--model", "tiny-ViT-112", "--max-frames", "6", "--workers", "1", "--log-every-steps", "1", "--lr", "1e-3", "--coef-lr", "1"]


@pytest.fixture(scope="module")
def uneven_shards(sample_dataset, tmp_path_factory):
    """Two shards holding 7 and 1 samples (the second unit is mostly broken inputs)."""
    out = tmp_path_factory.mktemp("uneven")
    records = load_annotations(str(sample_dataset / "annotations.jsonl"))
    build_shards(records, str(sample_dataset / "videos"), Store(str(out)), ExtractionSettings(short_side=112),
                 BuildOptions(samples_per_shard=7, workers=2, show_progress=False))  # fmt: skip
    assert [s["samples"] for s in read_manifest(Store(str(out)))["shards"]] == [7, 1]
    return out


def records(run: Path, kind: str = "train") -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


DDP_CASES = {
    "meanP": ["--sim-header", "meanP"],
    "tightTransf": ["--sim-header", "tightTransf"],  # its parameters are used outside the DDP forward
    # token interaction gathers text tokens and frames; WTI weights live outside the forward too
    "wti_cdcr_coarse_device_decode": [
        "--sim-header",
        "seqTransf",
        "--interaction",
        "wti",
        "--cdcr",
        "3",
        "--coarse-weight",
        "1",
        "--decode-on",
        "device",
    ],  # fmt: skip
    "emcl": ["--sim-header", "meanP", "--emcl", "--emcl-bases", "4"],  # running bases are buffers
    # frozen CLIP with LoRA parametrisations and prompts; the base file is written by the test
    "peft": ["--sim-header", "seqTransf", "--peft", "prompts+lora", "--lora-rank", "2", "--pretrained", "BASE"],
}


@pytest.fixture(scope="module")
def ddp_runs(uneven_shards, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Every DDP case trained under one 2-process torchrun job, one after another, each by the ``train()`` that
    ``python -m train`` calls (tests/ddp_cases.py says why one job)."""
    root = tmp_path_factory.mktemp("ddp")
    base = root / "base.pt"
    torch.save(load_clip("tiny-ViT-112", None).state_dict(), base)
    runs = {case: ["--train-shards", str(uneven_shards), "--val-shards", str(uneven_shards), "--output-dir", str(root / case),
                   "--batch-size", "4", "--steps-per-epoch", "3", "--epochs", "2", "--no-resampled",
                   *(str(base) if flag == "BASE" else flag for flag in flags), *TINY]
            for case, flags in DDP_CASES.items()}  # fmt: skip
    (root / "runs.json").write_text(json.dumps(runs))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tests.ddp_cases",
               str(root / "runs.json")]  # fmt: skip
    return root, subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("case", DDP_CASES)
def test_two_process_gloo_with_uneven_shards_finishes_and_evaluates(ddp_runs, uneven_shards, case):
    root, job = ddp_runs
    assert job.returncode == 0, job.stderr[-3000:]
    run = root / case
    config = records(run, "config")[0]
    assert config["world_size"] == 2 and config["config"]["output_dir"] == str(run)
    assert [r["step"] for r in records(run)] == [1, 2, 3, 4, 5, 6]
    evals = records(run, "eval")
    assert [e["step"] for e in evals] == [3, 6]
    assert evals[-1]["num_videos"] == 8  # both ranks' shares gathered: 7 + 1
    assert latest_checkpoint(str(run / "checkpoints")).endswith("step_00000006.pt")
    assert (run / "curves.png").stat().st_size > 1000
    if case == "meanP":  # the evaluator under torchrun: both ranks encode, one prints the result
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "eval",
                   "--checkpoint", str(run), "--shards", str(uneven_shards), "--post", "--json"]  # fmt: skip
        evaluated = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        printed = [line for line in evaluated.stdout.splitlines() if line.startswith("{")]
        assert len(printed) == 1 and json.loads(printed[0])["raw"]["v2t"]["N"] == 8  # 8 videos, gathered from both ranks


def test_unsplittable_shards_are_refused_without_resampling(uneven_shards):
    config = StreamConfig(urls=(str(uneven_shards / "shard-000000.tar"), str(uneven_shards / "shard-000001.tar")),
                          batch_size=2, resampled=False, workers=0)  # fmt: skip
    stream = ClipStream(config, lambda texts, context_length: torch.zeros(len(texts), context_length), rank=0, world_size=4, start_step=0)
    with pytest.raises(StreamConfigError, match="2 shards cannot be split over 4 ranks"):
        next(iter(stream))


def _train_command(shards: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "train", "--train-shards", str(shards), "--output-dir", str(run), "--batch-size", "4",
            "--steps-per-epoch", "4", "--epochs", "2", *TINY, *extra]  # fmt: skip


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "timed out waiting for the trainer"
        time.sleep(0.05)


def test_sigterm_saves_and_restart_continues(uneven_shards, tmp_path):
    run = tmp_path / "term"
    command = _train_command(uneven_shards, run, "--checkpoint-every-steps", "100")
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(records(run)) >= 2, process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    stopped_at = load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["step"]
    assert f"SIGTERM: saved step {stopped_at}" in stdout and 2 <= stopped_at < 8
    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {stopped_at}" in resumed.stdout
    steps = [r["step"] for r in records(run)]
    assert steps == list(range(1, 9)), "steps continue without gaps or repeats"
    final = load_checkpoint(latest_checkpoint(str(run / "checkpoints")))
    assert final["step"] == 8 and final["epoch"] == 2 and final["data"] == {"start_step": 8, "seed": 42}
    # the schedule continued where it stopped (warmup + cosine over 8 steps ends at 0)
    assert records(run)[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("sync_every", [1, 4])
def test_sigterm_to_the_process_group_with_data_workers_saves_on_two_ranks(uneven_shards, tmp_path, sync_every):
    """As torchrun under Slurm is stopped: SIGTERM to every process of the job (agent, both ranks
    and their DataLoader workers). Workers must survive it so the ranks can agree, save and exit.
    With --sync-every-steps N the ranks agree on the flag every N steps: the save comes within N."""
    run = tmp_path / "group"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "train",
               "--train-shards", str(uneven_shards), "--output-dir", str(run), "--batch-size", "4", "--steps-per-epoch", "200",
               "--epochs", "1", "--checkpoint-every-steps", "1000", *TINY, "--workers", "2", "--sync-every-steps", str(sync_every)]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    _wait_for(lambda: len(records(run)) >= 3, process, timeout=300)
    seen = records(run)[-1]["step"]
    os.killpg(process.pid, signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert "killed by signal" not in stderr, stderr[-3000:]
    saved = latest_checkpoint(str(run / "checkpoints"))
    assert saved is not None, stderr[-3000:]
    stopped_at = load_checkpoint(saved)["step"]
    assert 3 <= stopped_at < 200 and f"SIGTERM: saved step {stopped_at}" in stdout
    assert stopped_at % sync_every == 0 and stopped_at <= seen + sync_every + 1  # the step running then, plus N at most


@pytest.mark.parametrize("sync_every,checkpoint_every", [(1, 4), (5, 4), (5, 100)])
def test_a_nan_loss_stops_the_run_before_a_checkpoint_is_written(uneven_shards, tmp_path, monkeypatch, sync_every, checkpoint_every):
    """The loss of step 3 is NaN. Read every step (1), or every 5 steps but with a checkpoint due at
    step 4 (checked before it is written), or at step 5: the run stops naming step 3, and no
    checkpoint exists."""
    from train.config import parse_config
    from train.step import Trainer
    from train.trainer import train

    real_step = Trainer.step

    def poisoned(self, batch):
        loss, parts = real_step(self, batch)
        return (loss * float("nan"), parts) if self.step_count == 3 else (loss, parts)

    monkeypatch.setattr(Trainer, "step", poisoned)
    run = tmp_path / "nan"
    config = parse_config(["--train-shards", str(uneven_shards), "--output-dir", str(run), "--batch-size", "4", "--steps-per-epoch", "10",
                           "--epochs", "1", *TINY, "--workers", "0", "--log-every-steps", "100", "--checkpoint-every-steps",
                           str(checkpoint_every), "--sync-every-steps", str(sync_every)])  # fmt: skip
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 3; last batch keys \["):
        train(config)
    assert latest_checkpoint(str(run / "checkpoints")) is None


# A rank whose loader iterator outlives it (a module global here; in production an exception's
# traceback or a reference cycle): torch's atexit hook then leaves the workers to multiprocessing's,
# which terminate()s them with SIGTERM and joins them.
LOADER_ALIVE_AT_EXIT = """
import sys, torch
from shards.reader import shard_urls
from train.data import StreamConfig, make_loader
config = StreamConfig(urls=tuple(shard_urls(sys.argv[1])), batch_size=2, max_frames=6, image_size=112, workers=1)
batches = iter(make_loader(config, lambda texts, context_length: torch.zeros(len(texts), context_length, dtype=torch.long), 0, 1, 0))
next(batches)
print(batches._workers[0].pid, flush=True)
sys.stdin.readline()  # the test sends the worker a SIGTERM of its own meanwhile
next(batches)
print("read on after the SIGTERM", flush=True)
"""


def test_workers_ignore_outside_sigterm_but_never_block_their_rank_from_exiting(uneven_shards):
    process = subprocess.Popen([sys.executable, "-c", LOADER_ALIVE_AT_EXIT, str(uneven_shards)], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        worker = int(process.stdout.readline())
        os.kill(worker, signal.SIGTERM)  # from this process, not the worker's parent: as Slurm's signal to the job
        time.sleep(1.0)
        os.kill(worker, 0)  # still alive (raises ProcessLookupError otherwise)
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "read on after the SIGTERM"
        assert process.wait(timeout=60) == 0, process.stderr.read()[-3000:]  # was: joined its SIGTERM-deaf worker forever
    finally:
        process.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and subprocess.run(["ps", "-p", str(worker)], capture_output=True).returncode == 0:
        time.sleep(0.2)
    assert subprocess.run(["ps", "-p", str(worker)], capture_output=True).returncode != 0, "the worker outlived its rank"


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, as Slurm kills a job step (by cgroup): torchrun
    starts each rank in a session of its own, so killing the launcher's process group is not enough."""
    table = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout.split()
    children: dict[int, list[int]] = {}
    for child, parent in zip(map(int, table[::2]), map(int, table[1::2]), strict=True):
        children.setdefault(parent, []).append(child)
    doomed, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        doomed.append(current)
        frontier.extend(children.get(current, []))
    for victim in doomed:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _two_nodes(shards: Path, tmp_path: Path, port: int) -> list[subprocess.Popen]:
    """Two torchrun "nodes" of one rank each on this machine, each with its own (unshared)
    --output-dir: the same relative path resolved in a different working folder per node."""
    nodes = []
    for node in (0, 1):
        cwd = tmp_path / f"node{node}"
        cwd.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
                   "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "train", "--train-shards", str(shards),
                   "--output-dir", "run", "--batch-size", "4", "--steps-per-epoch", "12", "--epochs", "1",
                   "--checkpoint-every-steps", "2", *TINY]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
        nodes.append(subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True, env=env))  # fmt: skip
    return nodes


def test_node_killed_then_job_resumes_on_nodes_without_a_shared_output_dir(uneven_shards, tmp_path):
    """Only rank 0 (node 0) writes checkpoints; node 1's folder stays empty. Node 1 is killed
    mid-run and the job with it; the requeued job must resume from rank 0's checkpoint on both
    nodes instead of starting node 1 at step 0 and hanging."""
    run0 = tmp_path / "node0" / "run"
    nodes = _two_nodes(uneven_shards, tmp_path, _free_port())
    _wait_for(lambda: latest_checkpoint(str(run0 / "checkpoints")) is not None and len(records(run0)) >= 3, nodes[0], timeout=300)
    _kill_tree(nodes[1].pid)  # the node dies: agent, rank and data workers at once
    nodes[1].wait(timeout=60)
    # the surviving node would block in its next collective until --dist-timeout; Slurm's
    # srun --kill-on-bad-exit ends the whole step instead, as done here
    _kill_tree(nodes[0].pid)
    nodes[0].wait(timeout=60)
    killed_at = load_checkpoint(latest_checkpoint(str(run0 / "checkpoints")))["step"]
    assert not (tmp_path / "node1" / "run" / "checkpoints").exists()

    requeued = _two_nodes(uneven_shards, tmp_path, _free_port())
    outputs = [node.communicate(timeout=300) for node in requeued]
    assert [node.returncode for node in requeued] == [0, 0], outputs[1][1][-3000:]
    assert f"at step {killed_at}" in outputs[0][0]
    assert "resumed from rank 0's copy" in outputs[1][0]
    steps = [r["step"] for r in records(run0)]
    assert steps[len(steps) - (12 - killed_at) :] == list(range(killed_at + 1, 13))  # the requeued job's steps, in order
    assert set(range(1, killed_at + 1)) <= set(steps[: len(steps) - (12 - killed_at)])  # the killed job got past its checkpoint


def test_sigkill_resumes_from_last_complete_checkpoint(uneven_shards, tmp_path):
    run = tmp_path / "kill"
    command = _train_command(uneven_shards, run, "--checkpoint-every-steps", "2")
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: latest_checkpoint(str(run / "checkpoints")) is not None and len(records(run)) >= 3, process)
    process.kill()
    process.communicate()
    saved = load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["step"]
    resumed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {saved}" in resumed.stdout
    assert load_checkpoint(latest_checkpoint(str(run / "checkpoints")))["step"] == 8


def test_half_written_checkpoint_is_never_loaded(tmp_path):
    directory = tmp_path / "ckpt"

    def state(step: int) -> dict:
        return {"step": step, "model": {"w": torch.ones(3)}, "config": {}}

    save_checkpoint(str(directory), state(2), step=2)
    (directory / ".step_00000004.pt.partial-1234").write_bytes(b"half a checkpoint")
    assert load_checkpoint(latest_checkpoint(str(directory)))["step"] == 2
    save_checkpoint(str(directory), state(4), step=4)
    save_checkpoint(str(directory), state(6), step=6)
    assert sorted(p.name for p in directory.glob("step_*.pt")) == ["step_00000004.pt", "step_00000006.pt"]
    (directory / "latest").write_text("step_00000009.pt\n")
    with pytest.raises(RuntimeError, match="step_00000009.pt"):
        latest_checkpoint(str(directory))


def test_train_and_evaluate_from_an_s3_bucket(sample_dataset, s3_bucket, tmp_path, capsys):
    """Shards, checkpoints, metrics, curves and the eval report all in the bucket; the second
    run resumes from the bucket's checkpoint."""
    from eval.__main__ import main as eval_main
    from train.config import parse_config
    from train.trainer import train

    url = f"s3://{s3_bucket}/shapes"
    run = f"s3://{s3_bucket}/runs/first"
    records = load_annotations(str(sample_dataset / "annotations.jsonl"))
    build_shards(records, str(sample_dataset / "videos"), Store(url), ExtractionSettings(short_side=112),
                 BuildOptions(samples_per_shard=4, workers=1, show_progress=False))  # fmt: skip

    def options(epochs: int) -> list[str]:
        return ["--train-shards", url, "--val-shards", url, "--output-dir", run, "--model", "tiny-ViT-112", "--batch-size", "4",
                "--steps-per-epoch", "2", "--epochs", str(epochs), "--max-frames", "6", "--workers", "1", "--log-every-steps", "1"]  # fmt: skip

    result = train(parse_config(options(1)))
    assert result["step"] == 2 and result["eval"]["num_videos"] == 8
    assert not (tmp_path / "s3:").exists() and not os.path.exists("s3:")
    result = train(parse_config(options(2)))
    assert result["step"] == 4 and f"resumed from {run}/checkpoints/step_00000002.pt at step 2" in capsys.readouterr().out
    outputs = Store(run)
    assert outputs.read_bytes("checkpoints/latest").decode().strip() == "step_00000004.pt"
    logged = [json.loads(line) for line in outputs.read_bytes("metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in logged if r["kind"] == "train"] == [1, 2, 3, 4]
    assert outputs.read_bytes("curves.png")[:4] == b"\x89PNG"

    report = f"s3://{s3_bucket}/eval"
    assert eval_main(["--checkpoint", run, "--shards", url, "--out", report, "--post"]) == 0
    assert json.loads(Store(report).read_bytes("metrics.json"))["num_videos"] == 8
    page = Store(report).read_bytes("report.html").decode()
    assert "data:image/png;base64" in page and "src='rank_histogram.png'" not in page  # self-contained


def test_a_killed_upload_leaves_no_staging_behind(tmp_path, monkeypatch, s3_bucket):
    from shards import storage

    monkeypatch.setenv("CLIP4CLIP_STAGING_DIR", str(tmp_path / "staging"))
    monkeypatch.setattr(storage, "_staging_dir", None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / "staging" / f"{dead.pid}-abc" / "tmpx"
    leftover.mkdir(parents=True)
    (leftover / "shard-000003.tar").write_bytes(b"half an upload")
    Store(f"s3://{s3_bucket}/out").write_bytes("a.txt", b"hello")
    assert not (tmp_path / "staging" / f"{dead.pid}-abc").exists()
    assert Store(f"s3://{s3_bucket}/out").read_bytes("a.txt") == b"hello"
    assert [p.name.split("-")[0] for p in (tmp_path / "staging").iterdir()] == [str(os.getpid())]


def test_curves_after_a_resume_draw_each_step_once():
    from train.run_log import last_per_step, plot_curves

    logged = [{"kind": "train", "step": s, "loss": 1.0} for s in (1, 2, 3, 4)] + [{"kind": "train", "step": s, "loss": 0.5} for s in (3, 4, 5)]
    assert [(r["step"], r["loss"]) for r in last_per_step(logged)] == [(1, 1.0), (2, 1.0), (3, 0.5), (4, 0.5), (5, 0.5)]
    assert plot_curves(logged)[:4] == b"\x89PNG"


def test_logs_read_like_one_process_and_tensorboard_records_the_run(uneven_shards, tmp_path, capsys, caplog):
    from train.config import parse_config
    from train.trainer import train

    def options(epochs: int) -> list[str]:
        return ["--train-shards", str(uneven_shards), "--output-dir", str(tmp_path / "run"), "--batch-size", "4",
                "--steps-per-epoch", "2", "--epochs", str(epochs), "--tensorboard", *TINY]  # fmt: skip

    train(parse_config(options(1)))
    first = capsys.readouterr().out
    assert "backbone: CLIP ViT" in first and "activation QuickGELU" in first and "step 2/2  loss" in first
    assert not any(line.lstrip().startswith("{") for line in first.splitlines())  # JSON stays in metrics.jsonl
    caplog.clear()
    train(parse_config(options(2)))
    resumed = capsys.readouterr().out
    assert "resumed from" in resumed and "step 4/4  loss" in resumed
    assert "No pretrained weights loaded" not in caplog.text  # untrue when the weights come from a checkpoint
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and sum(e.stat().st_size for e in events) > 200


@pytest.mark.parametrize("extra", [[], ["--head", "seqTransf", "--interaction", "wti", "--decode-on", "device"]])
def test_gpu_benchmark_runs_the_production_step_on_cpu(uneven_shards, extra, capsys):
    """bench/bench_train_gpu.py's --device cpu smoke mode: its options run through train/step.py's
    Trainer (no throughput figure comes of it). Run in this process (its command line is --help-tested
    in test_cli_help.py): the same code without another interpreter's start."""
    from bench.bench_train_gpu import main as bench_main

    bench_main(["--shards", str(uneven_shards), "--device", "cpu", "--model", "tiny-ViT-112", "--batch-size", "4", "--frames", "6",
                "--workers", "1", "--steps", "2", "--warmup", "1", *extra])  # fmt: skip
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{\n") :])  # the report (indented JSON), after any log line
    assert report["device"].startswith("cpu (smoke run")
    assert report["synthetic_ceiling"]["steps"] == 2 and report["streamed"]["clips_per_s"] > 0


def test_a_recipe_run_prints_and_records_its_effective_options(uneven_shards, tmp_path, capfd):
    """--recipe: the options it sets and the flags that override it are logged with their origin, and
    metrics.jsonl's config record names the recipe and its source."""
    from train.config import parse_config
    from train.trainer import train

    recipe = tmp_path / "tiny-drl.toml"
    recipe.write_text('title = "tiny DRL"\nsource = "foolwood/DRL scripts/msrvtt.sh:24"\npublished = "-"\n'
                      '[options]\nsim_header = "seqTransf"\ninteraction = "wti"\ncdcr = 3\ncdcr_alpha1 = 0.14\nlr = 0.001\n')  # fmt: skip
    run = tmp_path / "recipe"
    config = parse_config(["--recipe", str(recipe), "--train-shards", str(uneven_shards), "--output-dir", str(run), "--batch-size", "4",
                           "--steps-per-epoch", "2", "--epochs", "1", *TINY, "--workers", "0", "--lr", "0.002"])  # fmt: skip
    train(config)
    captured = capfd.readouterr()
    logged = captured.err + captured.out
    assert "recipe tiny-drl, from foolwood/DRL scripts/msrvtt.sh:24" in logged
    assert "--cdcr-alpha1 0.14 (recipe)" in logged and "--lr 0.002 (command line)" in logged
    stored = records(run, "config")[0]
    assert stored["recipe"]["name"] == "tiny-drl" and stored["config"]["lr"] == 0.002 and stored["config"]["cdcr"] == 3


def test_a_run_with_workers_ends_cleanly_and_says_its_validation_is_fit(uneven_shards, tmp_path):
    """A normal run with data workers, as a user starts it: exit 0 and nothing on stderr from the workers' end
    (the loader's workers are stopped by the run, not by the interpreter's exit hook, where DataLoader's SIGCHLD
    handler raised "exited unexpectedly with exit code 143"); validating on the training shards is called fit."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "train", "--train-shards", str(uneven_shards), "--val-shards", str(uneven_shards),
                           "--output-dir", str(tmp_path / "run"), "--batch-size", "4", "--steps-per-epoch", "3", "--epochs", "1",
                           *TINY[:4], "--workers", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for sign in ("Traceback", "Exception ignored", "exited unexpectedly", "killed by signal"):
        assert sign not in done.stderr, done.stderr[-3000:]
    assert "is also a training source: its numbers measure fit, not held-out retrieval" in done.stdout
    assert "fit, not held-out" in (tmp_path / "run" / "card.md").read_text()
