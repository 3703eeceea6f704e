"""``python -m pipeline build ... --retry-failures`` (issue 33): only the failed videos are attempted
again, what now succeeds lands in new shards of the same build, existing shards stay byte-identical,
the manifest and failures.jsonl say how the build stands, and a retry is idempotent, resumable and
shared by the tasks of a Slurm array (the Ray path is in tests/test_ray.py)."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from pipeline.__main__ import main as pipeline_main
from shards.reader import ReadErrors, iter_samples, shard_urls
from tests.conftest import write_time_coded_video
from tests.http_files import send_file


class _OutageHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with byte ranges, or 503 for every request while the server's ``outage`` is set."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.server.outage.is_set():
            self.send_error(503, "down for maintenance")
            return
        send_file(self, Path(self.directory) / self.path.lstrip("/"))


@pytest.fixture
def clip(tmp_path) -> Path:
    path = tmp_path / "clip.mp4"
    write_time_coded_video(path, 64, 48, 3.0)
    return path


@pytest.fixture
def web_server(tmp_path):
    root = tmp_path / "web"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: _OutageHandler(*a, directory=str(root), **k))
    server.outage = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _build(annotations: Path, videos: Path, out: Path, *extra: str) -> int:
    return pipeline_main(["build", "--annotations", str(annotations), "--videos", str(videos), "--out", str(out), "--samples-per-shard", "2",
                          "--short-side", "32", "--workers", "1", "--no-progress", "--max-failure-fraction", "1", *extra])  # fmt: skip
    # (these builds fail on purpose: their exit status for too many failures is tested in test_build_messages.py)


def _shard_digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.tar"))}


def _keys(out: Path) -> list[str]:
    errors = ReadErrors()
    keys = [sample["__key__"] for sample in iter_samples(shard_urls(str(out)), errors.handler)]
    assert errors.errors == []
    return keys


def _failures(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]


def test_a_server_outage_is_retried_into_new_shards_and_the_rest_is_untouched(tmp_path, clip, web_server, monkeypatch, capsys):
    import pipeline.remote_videos

    monkeypatch.setattr(pipeline.remote_videos, "BACKOFF_S", 0.01)
    server, web_root, url = web_server
    for name in ("a", "b", "c"):
        shutil.copy(clip, web_root / f"{name}.mp4")
    (tmp_path / "local").mkdir()
    shutil.copy(clip, tmp_path / "local" / "here.mp4")
    annotations = tmp_path / "list.jsonl"
    annotations.write_text("".join(json.dumps(row) + "\n" for row in (
        {"video": "here.mp4", "caption": "a local clip"}, {"video": f"{url}/a.mp4", "caption": "first"},
        {"video": f"{url}/b.mp4", "caption": "second"}, {"video": f"{url}/c.mp4", "caption": "third"},
        {"video": f"{url}/gone.mp4", "caption": "never there"})))  # fmt: skip
    out = tmp_path / "out"

    server.outage.set()  # the first build meets an outage: every web video fails
    assert _build(annotations, tmp_path / "local", out) == 0
    assert sorted(_keys(out)) == ["here"]
    assert sorted(f["video_id"] for f in _failures(out)) == ["a", "b", "c", "gone"]
    before = _shard_digests(out)
    capsys.readouterr()

    server.outage.clear()  # the server is back: the retry builds what it can
    assert _build(annotations, tmp_path / "local", out, "--retry-failures") == 0
    printed = capsys.readouterr().out
    assert "retry round 1: 4 failed video(s)" in printed and "3 of the 4 retried video(s) now built, 1 still fail" in printed
    after = _shard_digests(out)
    assert {name: after[name] for name in before} == before  # every earlier shard byte-identical
    assert set(after) - set(before)  # the recovered videos are in new shards of the same build
    keys = _keys(out)
    assert sorted(keys) == ["a", "b", "c", "here"] and len(keys) == len(set(keys))
    (gone,) = _failures(out)
    assert gone["video_id"] == "gone" and "404" in gone["error"] and gone["unit"] >= 3  # its latest attempt: the retry unit
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 4 and manifest["num_failures"] == 1 and manifest["totals"]["failures"] == {"missing": 1}
    assert [(r["round"], r["videos"], r["recovered"]) for r in manifest["retries"]] == [(1, 4, 3)]
    assert sum(s["samples"] for s in manifest["shards"]) == 4

    # again: only the one still failing is attempted; nothing built before changes
    assert _build(annotations, tmp_path / "local", out, "--retry-failures") == 0
    assert "retry round 2: 1 failed video(s)" in capsys.readouterr().out
    assert _shard_digests(out) == after and len(_failures(out)) == 1

    # the file appears; then with no failure left a retry has nothing to do and writes nothing
    shutil.copy(clip, web_root / "gone.mp4")
    assert _build(annotations, tmp_path / "local", out, "--retry-failures") == 0
    assert _failures(out) == [] and sorted(_keys(out)) == ["a", "b", "c", "gone", "here"]
    capsys.readouterr()
    state = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert _build(annotations, tmp_path / "local", out, "--retry-failures") == 0
    assert "nothing to retry: no failure stands" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == state


def test_a_retry_split_over_a_slurm_array_shares_one_round_and_a_killed_one_resumes(tmp_path, clip, monkeypatch, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("v0", "v1"):
        shutil.copy(clip, videos / f"{name}.mp4")
    annotations = tmp_path / "list.csv"
    annotations.write_text("video,caption\n" + "".join(f"v{i},clip {i}\n" for i in range(7)))
    out = tmp_path / "out"
    assert _build(annotations, videos, out) == 0
    assert len(_failures(out)) == 5
    before = _shard_digests(out)
    for i in range(2, 7):  # the missing downloads arrive
        shutil.copy(clip, videos / f"v{i}.mp4")

    def task(index: int, job: str) -> int:
        monkeypatch.setenv("SLURM_ARRAY_JOB_ID", job)
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(index))
        return _build(annotations, videos, out, "--retry-failures")

    assert task(0, "77") == 0  # opens round 1 (3 units of the 5 videos) and builds its share: units 4 and 6
    assert not (out / "_build" / "retries" / "002.json").exists()
    assert task(1, "77") == 0  # joins round 1, builds unit 5
    assert task(1, "77") == 0  # a requeued task of the same array: the round is done, no new one is opened
    assert "nothing to build" in capsys.readouterr().out
    assert not (out / "_build" / "retries" / "002.json").exists()
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name)
    assert pipeline_main(["merge-manifest", "--out", str(out)]) == 0
    assert _failures(out) == [] and sorted(_keys(out)) == [f"v{i}" for i in range(7)]
    after = _shard_digests(out)
    assert {name: after[name] for name in before} == before

    # a retry killed halfway (here: one task of two ran) is finished by the next retry, not restarted
    for i in range(2, 7):
        (videos / f"v{i}.mp4").unlink()
    shutil.rmtree(out)
    assert _build(annotations, videos, out) == 0 and len(_failures(out)) == 5
    for i in range(2, 4):
        shutil.copy(clip, videos / f"v{i}.mp4")
    assert _build(annotations, videos, out, "--retry-failures", "--num-jobs", "2", "--job-index", "0") == 0
    assert _build(annotations, videos, out, "--retry-failures") == 0  # one job: finishes round 1
    assert not (out / "_build" / "retries" / "002.json").exists()
    assert sorted(f["video_id"] for f in _failures(out)) == ["v4", "v5", "v6"]
    assert sorted(_keys(out)) == ["v0", "v1", "v2", "v3"]


def test_retrying_an_unfinished_build_is_refused_with_the_fix(tmp_path, clip, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(clip, videos / "v0.mp4")
    annotations = tmp_path / "list.csv"
    annotations.write_text("video,caption\nv0,zero\nv1,one\nv2,two\n")
    out = tmp_path / "out"
    assert _build(annotations, videos, out, "--num-jobs", "2", "--job-index", "0") == 0  # the other job never ran
    assert _build(annotations, videos, out, "--retry-failures") == 2
    assert "without --retry-failures" in capsys.readouterr().err
