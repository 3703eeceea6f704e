"""Each storage problem gets its own message, in seconds, before anything heavy starts."""

import os
import socket

import pytest

from shards.probe import probe_location
from shards.storage import StorageError


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def isolated_aws(monkeypatch, s3_endpoint):
    """No credentials file or instance metadata to fall back on: only what the test sets."""
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield
    s3fs.S3FileSystem.clear_instance_cache()


def test_each_s3_cause_has_its_own_message(s3_bucket, isolated_aws, monkeypatch):
    probe_location(f"s3://{s3_bucket}/anything", must_exist=False)  # an output only needs its bucket
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        probe_location("s3://no-such-bucket/shards", must_exist=True)
    with pytest.raises(StorageError, match="nothing under this prefix"):
        probe_location(f"s3://{s3_bucket}/shrads", must_exist=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint http://127.0.0.1"):
        probe_location(f"s3://{s3_bucket}/shards", must_exist=True)


def test_missing_credentials_are_named(s3_bucket, isolated_aws, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no S3 credentials found"):
        probe_location(f"s3://{s3_bucket}/shards", must_exist=True)


def test_mistyped_train_shards_fail_before_clip_loads(tmp_path, monkeypatch, capsys):
    from train import setup as run_setup
    from train.__main__ import main as train_main

    monkeypatch.setattr(run_setup, "build_model", lambda config: pytest.fail("CLIP was loaded before the shards were checked"))
    code = train_main(["--train-shards", str(tmp_path / "shrads"), "--output-dir", str(tmp_path / "run"), "--model", "tiny-ViT"])
    assert code == 2
    error = capsys.readouterr().err
    assert "shrads: no such file or folder" in error and "steps-per-epoch" not in error
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_main(["--train-shards", str(empty), "--output-dir", str(tmp_path / "run"), "--model", "tiny-ViT"]) == 2
    assert "no manifest.json and no .tar shards found" in capsys.readouterr().err


def test_eval_names_a_missing_bucket(s3_bucket, isolated_aws, tmp_path, capsys):
    from eval.__main__ import main as eval_main

    assert eval_main(["--checkpoint", str(tmp_path), "--shards", "s3://no-such-bucket/test"]) == 2
    assert "bucket 'no-such-bucket' does not exist" in capsys.readouterr().err
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1")
