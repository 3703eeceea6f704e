"""S3 under faults: dropped connections, stalls, a missing, a truncated and a corrupt shard.

Shards are built into a moto bucket through a proxy (tests/fault_proxy.py) that can reset a
download halfway or stall it. Reads must retry from the byte where they stopped, give up with
an error naming the shard when the fault persists, never hang, and count what they skipped.
"""

import io
import json
import tarfile

import pytest
import s3fs

from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from shards.reader import ReadErrors, ReadPolicy, ShardReadError, iter_samples, shard_urls
from shards.storage import Store
from tests.fault_proxy import FOREVER, FaultProxy

FAST = ReadPolicy(retries=2, backoff_s=0.01, timeout_s=1.0)


@pytest.fixture
def faulty_s3(s3_endpoint, s3_bucket, monkeypatch):
    proxy = FaultProxy(s3_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    s3fs.S3FileSystem.clear_instance_cache()
    yield proxy, s3_bucket
    proxy.stop()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket_shards(faulty_s3, sample_dataset):
    proxy, bucket = faulty_s3
    url = f"s3://{bucket}/shapes"
    records = load_annotations(str(sample_dataset / "annotations.jsonl"))
    build_shards(records, str(sample_dataset / "videos"), Store(url), ExtractionSettings(short_side=112),
                 BuildOptions(samples_per_shard=2, workers=1, show_progress=False))  # fmt: skip
    urls = shard_urls(url)
    reference = {s["__key__"]: s for s in iter_samples(urls, policy=FAST)}
    proxy.clear()
    return proxy, url, urls, reference


def _without_url(sample: dict) -> dict:
    return {k: v for k, v in sample.items() if k != "__url__"}


def test_dropped_and_stalled_reads_are_retried_from_where_they_stopped(bucket_shards):
    proxy, _, urls, reference = bucket_shards
    reset = proxy.add(urls[0].rsplit("/", 1)[1], "reset", times=2)
    stall = proxy.add(urls[1].rsplit("/", 1)[1], "slow", times=1, delay_s=3.0)
    samples = list(iter_samples(urls, policy=FAST))
    assert reset.fired == 2 and stall.fired == 1
    assert [s["__key__"] for s in samples] == list(reference)
    assert all(_without_url(s) == _without_url(reference[s["__key__"]]) for s in samples)  # byte for byte


def test_a_fault_that_persists_names_the_shard_after_the_retries(bucket_shards):
    proxy, _, urls, reference = bucket_shards
    name = urls[1].rsplit("/", 1)[1]
    fault = proxy.add(name, "reset", times=FOREVER)
    with pytest.raises(ShardReadError, match=rf"{name}.*gave up after 3 attempts"):
        list(iter_samples(urls, policy=FAST))
    errors = ReadErrors()
    proxy.clear()
    fault = proxy.add(name, "slow", times=FOREVER, delay_s=2.0)
    kept = [s["__key__"] for s in iter_samples(urls, errors.handler, FAST)]
    assert fault.fired >= 3  # first try + 2 retries (s3fs may issue more than one GET per try), each cut off by the 1 s timeout
    assert [url for url, _ in errors.errors] == [urls[1]] and "gave up" in errors.errors[0][1]
    lost = {k for k in reference if reference[k]["__url__"] == urls[1]}
    assert set(kept) == set(reference) - lost


def test_missing_and_truncated_shards_are_named_not_retried_forever(bucket_shards):
    proxy, _, urls, reference = bucket_shards
    fs = s3fs.S3FileSystem()
    fs.rm(urls[0])
    data = fs.cat_file(urls[2])
    fs.pipe_file(urls[2], data[: len(data) // 2])
    errors = ReadErrors()
    kept = [s for s in iter_samples(urls, errors.handler, FAST)]
    failed = dict(errors.errors)
    assert set(failed) == {urls[0], urls[2]}
    assert "FileNotFoundError" in failed[urls[0]] and "gave up" not in failed[urls[0]]  # not retried
    assert sum(1 for path in proxy.gets if urls[0].rsplit("/", 1)[1] in path) <= 1
    assert {s["__key__"] for s in kept} <= set(reference)


def corrupt_one_jpeg(fs: s3fs.S3FileSystem, url: str) -> str:
    """Rewrites the shard with one JPEG's bytes replaced by garbage; returns that sample's key."""
    source = tarfile.open(fileobj=io.BytesIO(fs.cat_file(url)))
    out = io.BytesIO()
    victim = None
    with tarfile.open(fileobj=out, mode="w") as target:
        for member in source.getmembers():
            payload = source.extractfile(member).read()
            if victim is None and member.name.endswith(".01.jpg"):
                victim = member.name.split(".")[0]
                payload = b"\xff\xd8" + bytes(range(256)) * (len(payload) // 256 + 1)
                member.size = len(payload)
            target.addfile(member, io.BytesIO(payload))
    fs.pipe_file(url, out.getvalue())
    return victim


def test_train_and_evaluate_from_a_faulty_bucket_finish_and_report_what_was_skipped(bucket_shards, tmp_path, capfd):
    from eval.__main__ import main as eval_main
    from train.config import parse_config
    from train.trainer import train

    proxy, url, urls, reference = bucket_shards
    fs = s3fs.S3FileSystem()
    data = fs.cat_file(urls[1])
    fs.pipe_file(urls[1], data[: len(data) * 2 // 3])  # truncated
    fs.rm(urls[2])  # missing, though the manifest lists it
    victim = corrupt_one_jpeg(fs, urls[3])
    proxy.add(urls[0].rsplit("/", 1)[1], "reset", times=2)
    proxy.add(urls[0].rsplit("/", 1)[1], "slow", times=1, delay_s=2.0)
    config = parse_config(["--train-shards", url, "--val-shards", url, "--output-dir", str(tmp_path / "run"), "--model", "tiny-ViT-112",
                           "--batch-size", "4", "--steps-per-epoch", "6", "--epochs", "1", "--max-frames", "6", "--workers", "1",
                           "--read-retries", "2", "--read-timeout", "1", "--log-every-steps", "3"])  # fmt: skip
    result = train(config)
    assert result["step"] == 6
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["skipped_rank0"] for r in log if r["kind"] == "train"][-1]
    assert skipped["unreadable_shards"] >= 1
    printed = capfd.readouterr().out
    assert "skipping rest of shard" in printed and (urls[1] in printed or urls[2] in printed)

    evaluation = result["eval"]["skipped"]
    assert sorted(evaluation["unreadable_shards"]) == sorted([urls[1], urls[2]])
    assert evaluation["undecodable"] == 1  # the corrupt JPEG's sample, never a black frame
    lost = {k for k in reference if reference[k]["__url__"] in (urls[1], urls[2])} | {victim}
    assert result["eval"]["num_videos"] <= len(reference) - len(lost) + 1  # the truncated shard may keep complete samples
    assert eval_main(["--checkpoint", str(tmp_path / "run"), "--shards", url, "--out", str(tmp_path / "eval"), "--post",
                      "--read-retries", "2", "--read-timeout", "1"]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["skipped"]["undecodable"] == 1 and len(metrics["skipped"]["unreadable_shards"]) == 2
