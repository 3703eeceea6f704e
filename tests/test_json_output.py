"""``--json`` is for scripts: each command that takes it prints its JSON alone on stdout (one document, or one
per query for ``python -m search``), everything meant for people on stderr. Each command is run as a
user's script would run it, from another folder, and its stdout goes straight into ``json.loads``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def stdout_of(tmp_path, *command: str) -> str:
    run = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


def test_eval_json_is_the_only_thing_on_stdout(search_collection, tmp_path):
    out = stdout_of(tmp_path, "eval", "--checkpoint", str(search_collection / "run"), "--shards", str(search_collection / "shards"), "--json")
    metrics = json.loads(out)  # one document: no "checkpoint: ..." or "evaluating ..." before it
    assert set(metrics["raw"]) == {"t2v", "v2t"} and metrics["raw"]["t2v"]["N"] == 24


def test_search_json_is_one_document_per_query(search_collection, sample_dataset, tmp_path):
    index = str(search_collection / "index")
    video = str(sample_dataset / "videos" / "clip000.mp4")
    lines = stdout_of(tmp_path, "search", "--index", index, "a blue square", "--file", video, "--like", "clip001", "-k", "3", "--json")
    answers = [json.loads(line) for line in lines.splitlines()]
    assert [len(a["hits"]) for a in answers] == [3, 3, 3] and answers[2]["query"] == "file clip000.mp4"
