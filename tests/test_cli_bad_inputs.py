"""Bad input to every CLI: a clear error naming the file (exit 2) or a recorded skip, never a
traceback, never code run from a data file."""

import ast
import json
import os
import pickle
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.__main__ import main as eval_main
from eval.metrics import main as metrics_main
from pipeline.__main__ import main as pipeline_main
from shards.reader import iter_samples, shard_urls
from tools.inspect_shards import main as inspect_main
from tools.make_sample_data import main as make_sample_data_main
from train.__main__ import main as train_main

REPO_ROOT = Path(__file__).resolve().parents[1]


def build(annotations: Path, videos: Path, out: Path, *extra: str) -> int:
    return pipeline_main(["build", "--annotations", str(annotations), "--videos", str(videos), "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize(
    "name,content",
    [
        ("broken.json", b"not json at all {"),
        ("empty.jsonl", b""),
        ("empty.csv", b""),
        ("columns.csv", b"a,b\n1,2\n"),
        ("random.bin", os.urandom(512)),
        ("lines.jsonl", b'{"video": "a.mp4", "captions": ["x"]}\n[1, 2\n'),
    ],
)
def test_build_refuses_unreadable_annotation_files_by_name(tmp_path, capsys, name, content):
    annotations = tmp_path / name
    annotations.write_bytes(content)
    (tmp_path / "videos").mkdir()
    assert build(annotations, tmp_path / "videos", tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert name in error and "Traceback" not in error
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_odd_unicode_and_empty_captions(sample_dataset, tmp_path):
    first, second = sorted(p.name for p in (sample_dataset / "videos").glob("clip*.mp4"))[:2]
    annotations = tmp_path / "odd.jsonl"
    entries = [
        {"video": first, "captions": ["", "   ", "\u200b\u200b", "\u202e"]},  # nothing visible: recorded as a failure
        {"video": second, "captions": ["caf\u00e9 \U0001f3a5 \u4e00\u500b\u5713", "", "a\u200bb  c"]},
    ]
    annotations.write_text("\n".join(json.dumps(e) for e in entries) + "\n", encoding="utf-8")
    assert build(annotations, sample_dataset / "videos", tmp_path / "out") == 0
    samples = list(iter_samples(shard_urls(str(tmp_path / "out"))))
    assert len(samples) == 1
    assert json.loads(samples[0]["json"])["captions"] == ["caf\u00e9 \U0001f3a5 \u4e00\u500b\u5713", "ab c"]
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert [f["video_id"] for f in failures] == [Path(first).stem] and "caption" in failures[0]["error"]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_msvd_pickle_cannot_run_code(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    captions = tmp_path / "raw-captions.pkl"
    captions.write_bytes(pickle.dumps({"vid1": [["a", "dog"]], "evil": _RunsCode()}))
    (tmp_path / "videos").mkdir()
    assert build(captions, tmp_path / "videos", tmp_path / "out", "--format", "msvd") == 2
    error = capsys.readouterr().err
    assert "raw-captions.pkl" in error and "refusing" in error
    assert not (tmp_path / "PWNED").exists()


def test_eval_refuses_files_that_are_not_checkpoints(tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2048))
    assert eval_main(["--checkpoint", str(garbage), "--shards", str(tmp_path)]) == 2
    assert "garbage.pt: not a readable checkpoint" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    assert eval_main(["--checkpoint", str(other), "--shards", str(tmp_path)]) == 2
    assert "other.pt: not a checkpoint of this project" in capsys.readouterr().err
    code_carrying = tmp_path / "code.pt"
    torch.save({"model": {}, "config": {}, "step": 0, "x": _RunsCode()}, code_carrying)
    assert eval_main(["--checkpoint", str(code_carrying), "--shards", str(tmp_path)]) == 2
    assert "code.pt" in capsys.readouterr().err


def test_metrics_cli_refuses_pickled_and_missing_arrays(tmp_path, capsys):
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert metrics_main([str(pickled)]) == 2
    assert "objects.npy" in capsys.readouterr().err
    assert metrics_main([str(tmp_path / "none.npy")]) == 2
    assert "none.npy" in capsys.readouterr().err


def test_inspect_names_missing_and_broken_shards(tmp_path, capsys):
    assert inspect_main([str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err
    broken = tmp_path / "shard-000000.tar"
    broken.write_bytes(os.urandom(3000))
    assert inspect_main([str(broken)]) != 0
    assert "shard-000000.tar" in capsys.readouterr().out


def test_train_refuses_missing_shards_bad_weights_and_impossible_options(tmp_path, capsys):
    base = ["--output-dir", str(tmp_path / "run"), "--model", "tiny-ViT", "--steps-per-epoch", "1"]
    assert train_main(["--train-shards", str(tmp_path / "nowhere"), *base]) == 2
    assert "nowhere" in capsys.readouterr().err
    shards = tmp_path / "shards"  # an (empty) tar shard: past the shard check, so the weights file is what fails
    shards.mkdir()
    tarfile.open(shards / "shard-000000.tar", "w").close()
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(os.urandom(1024))
    assert train_main(["--train-shards", str(shards), *base, "--pretrained", str(garbage)]) == 2
    assert "weights.pt" in capsys.readouterr().err
    for impossible in (["--peft", "lora"], ["--cdcr", "3", "--interaction", "ti"], ["--cdcr", "2", "--emcl"], ["--sim-header", "tightTransf", "--interaction", "wti"],
                       ["--emcl", "--interaction", "ti"], ["--interaction", "bogus"], ["--caption-mode", "bogus"],
                       ["--precision", "fp8"], ["--eercf"], ["--sim-header", "seqTransf", "--eercf", "--emcl"],
                       ["--peft", "dgl", "--pretrained", str(garbage), "--interaction", "wti"], ["--peft", "bogus"],
                       ["--peft", "tempme", "--pretrained", str(garbage), "--grad-checkpointing"],
                       ["--peft", "dual", "--pretrained", str(garbage), "--sim-header", "tightTransf"],
                       ["--peft", "dual", "--pretrained", str(garbage), "--seg-num", "6-3-2"],
                       ["--peft", "tempme", "--pretrained", str(garbage), "--merge-frames", "5-2-3"]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            train_main(["--train-shards", str(shards), *base, *impossible])
        assert exit_info.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_make_sample_data_refuses_a_negative_count(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        make_sample_data_main(["--out", str(tmp_path), "--num-videos", "-3"])
    assert exit_info.value.code == 2


def _python_sources() -> list[Path]:
    return [
        p
        for p in REPO_ROOT.rglob("*.py")
        if not any(part.startswith(".") or part in ("tests", "demo_out", "bench_out") for part in p.relative_to(REPO_ROOT).parts)
    ]


def _torch_load_calls(source: str) -> list[tuple[int, dict]]:
    """(line, {keyword: constant value}) of every ``torch.load(...)`` call in a module."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
            keywords = {k.arg: k.value.value if isinstance(k.value, ast.Constant) else None for k in node.keywords}
            calls.append((node.lineno, keywords))
    return calls


def test_torch_load_scan_sees_nested_calls_and_missing_keywords():
    assert _torch_load_calls("torch.load(io.BytesIO(f.read()), map_location='cpu', weights_only=True)") == [
        (1, {"map_location": "cpu", "weights_only": True})
    ]
    assert _torch_load_calls("torch.load(open(p), weights_only=False)")[0][1]["weights_only"] is False
    assert "weights_only" not in _torch_load_calls("torch.load(p)")[0][1]


def test_no_unsafe_loading_and_no_shell_strings_in_the_code():
    """Every torch.load passes weights_only=True; no shell, no pickle.load, no allow_pickle=True."""
    sources = _python_sources()
    assert len(sources) > 30
    for path in sources:
        text = path.read_text()
        for line, keywords in _torch_load_calls(text):  # parsed, so nested parentheses cannot hide or fake the keyword
            assert keywords.get("weights_only") is True, f"{path}:{line}: torch.load without weights_only=True"
        assert len(_torch_load_calls(text)) == text.count("torch.load("), f"{path}: a torch.load the parser did not see"
        for pattern in (
            r"shell\s*=\s*True",
            r"os\.system\(",
            r"os\.popen\(",
            r"pickle\.loads?\(",
            r"allow_pickle\s*=\s*True",
            r"(?<![\w.])eval\(",
            r"(?<![\w.])exec\(",
        ):
            assert not re.search(pattern, text), f"{path}: matches {pattern}"
