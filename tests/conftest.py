"""Shared fixtures: real videos made with ffmpeg, the MSR-VTT sample, and an S3 server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import ffmpeg
import numpy as np
import pytest

from pipeline.ffmpeg_binary import ffmpeg_executable
from tools.make_sample_data import make_sample_data

REPO_ROOT = Path(__file__).resolve().parent.parent
MSRVTT_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "msrvtt_test_sample"


# What makes a test an integration test: it makes real videos with ffmpeg, builds shards,
# trains, starts processes or an S3 server (seconds to minutes each), or marks itself (a long
# training loop on synthetic features). Every other test is a unit
# test: ``pytest -m "not integration"`` runs those alone, in seconds. CI runs everything.
INTEGRATION_FIXTURES = {"time_coded_videos", "sample_dataset", "msrvtt_sample", "s3_endpoint", "s3_bucket", "search_collection",
                        "moments_collection"}  # fmt: skip
INTEGRATION_MODULES = {"test_build", "test_extract", "test_real_world_files", "test_datasets", "test_learning", "test_train_runs", "test_s3_faults", "test_eval_cli"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        heavy = module in INTEGRATION_MODULES or INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("integration") is None:  # a test may also say so itself (a long training loop)
            item.add_marker(pytest.mark.integration if heavy else pytest.mark.unit)


def write_time_coded_video(path: Path, width: int, height: int, seconds: float, fps: int = 24) -> None:
    """A video whose grey level encodes the second it shows (20 * second, capped at 250).

    Decoded frames can then be checked for *when* they were taken, not just how many.
    """
    count = int(round(seconds * fps))
    levels = np.minimum((np.arange(count) // fps) * 20 + 10, 250).astype(np.uint8)
    frames = np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()
    args = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
        .output(str(path), vcodec="libx264", pix_fmt="yuv420p", preset="ultrafast", qp=0)
        .compile(cmd=ffmpeg_executable(), overwrite_output=True)
    )
    subprocess.run([args[0], "-nostdin", "-loglevel", "error", *args[1:]], input=frames.tobytes(), check=True)


@pytest.fixture(scope="session")
def time_coded_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("timecoded")
    specs = {
        "landscape": (320, 240, 5.0),
        "portrait": (240, 320, 5.0),
        "wide": (426, 240, 3.0),
        "long": (160, 120, 30.0),
    }
    paths = {}
    for name, (w, h, seconds) in specs.items():
        paths[name] = root / f"{name}.mp4"
        write_time_coded_video(paths[name], w, h, seconds)
    return paths


@pytest.fixture(scope="session")
def sample_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 generated clips (4 aspect ratios, 4 s and 7 s) plus 5 broken inputs."""
    root = tmp_path_factory.mktemp("sample_data")
    make_sample_data(str(root), num_videos=8, seed=0)
    return root


@pytest.fixture(scope="session")
def msrvtt_sample() -> Path:
    if not (MSRVTT_SAMPLE / "videos").is_dir():
        pytest.skip(f"MSR-VTT sample not found at {MSRVTT_SAMPLE}")
    return MSRVTT_SAMPLE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real HTTP S3 endpoint on 127.0.0.1 (moto's server), as s3fs tests itself."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION="us-east-1"
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket name for one test."""
    import boto3
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    name = f"bucket-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def search_collection(sample_dataset, tmp_path_factory):
    """Shards of the 8 generated clips (2 a shard), a briefly trained meanP + WTI model (a fine stage,
    so results come from both stages) and its index."""
    from pipeline.annotations import load_annotations
    from pipeline.build import BuildOptions, build_shards
    from pipeline.extract import ExtractionSettings
    from search.index import main as index_main
    from shards.storage import Store
    from train.config import parse_config
    from train.trainer import train

    root = tmp_path_factory.mktemp("service")
    records = load_annotations(str(sample_dataset / "annotations.jsonl"))
    build_shards(records, str(sample_dataset / "videos"), Store(str(root / "shards")), ExtractionSettings(short_side=112),
                 BuildOptions(samples_per_shard=2, workers=2, show_progress=False))  # fmt: skip
    train(parse_config(["--train-shards", str(root / "shards"), "--output-dir", str(root / "run"), "--model", "tiny-ViT-112",
                        "--batch-size", "4", "--steps-per-epoch", "2", "--epochs", "1", "--max-frames", "8", "--workers", "0",
                        "--lr", "1e-3", "--coef-lr", "1", "--sim-header", "meanP", "--interaction", "wti"]))  # fmt: skip
    assert index_main(["--checkpoint", str(root / "run"), "--shards", str(root / "shards"), "--out", str(root / "index")]) == 0
    return root


# the 3-minute video of the moments tests: three generated scenes of 60 s each, and what names each
MOMENT_SCENES = (("red", "circle", "left to right"), ("blue", "square", "bottom to top"), ("green", "circle", "right to left"))


@pytest.fixture(scope="session")
def moments_collection(tmp_path_factory):
    """A 3-minute video of three scenes and an 8-second clip in one folder, built unannotated with
    ``--windows 10:5`` and indexed with a tiny meanP model trained on 15-second captioned segments of
    the same three scenes (the windows themselves carry no caption). Returns the folder and each
    scene's (start, end) seconds."""
    from pipeline.__main__ import main as pipeline_main
    from search.index import main as index_main
    from tools.make_sample_data import ClipSpec, encode_mp4, render_frames, write_scenes_video
    from train.config import parse_config
    from train.trainer import train

    root = tmp_path_factory.mktemp("moments")
    (root / "videos").mkdir()
    scenes = [ClipSpec(f"scene{i}", colour, shape, direction, 128, 96, 60.0) for i, (colour, shape, direction) in enumerate(MOMENT_SCENES)]
    bounds = write_scenes_video(str(root / "videos" / "long.mp4"), scenes)
    short = ClipSpec("short", "yellow", "square", "top to bottom", 128, 96, 8.0)
    encode_mp4(render_frames(short, np.random.default_rng(1), 6.0), str(root / "videos" / "short.mp4"), 6.0)
    with open(root / "train.jsonl", "w", encoding="utf-8") as handle:
        for spec, (start, end) in zip(scenes, bounds, strict=True):
            for second in range(int(start), int(end), 15):
                handle.write(json.dumps({"video": "long.mp4", "captions": spec.captions(), "start": second, "end": second + 15}) + "\n")
    common = ["--short-side", "112", "--workers", "2", "--no-progress"]
    assert pipeline_main(["build", "--annotations", str(root / "train.jsonl"), "--videos", str(root / "videos"), "--out", str(root / "train_shards"),
                          "--samples-per-shard", "4", *common]) == 0  # fmt: skip
    assert pipeline_main(["build", "--videos", str(root / "videos"), "--out", str(root / "windows"), "--windows", "10:5",
                          "--samples-per-shard", "16", *common]) == 0  # fmt: skip
    train(parse_config(["--train-shards", str(root / "train_shards"), "--output-dir", str(root / "run"), "--model", "tiny-ViT-112",
                        "--batch-size", "6", "--steps-per-epoch", "60", "--epochs", "1", "--max-frames", "8", "--workers", "0",
                        "--lr", "1e-3", "--coef-lr", "1", "--sim-header", "meanP"]))  # fmt: skip
    assert index_main(["--checkpoint", str(root / "run"), "--shards", str(root / "windows"), "--out", str(root / "index")]) == 0
    return root, bounds
