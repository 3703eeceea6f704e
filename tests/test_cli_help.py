"""Every command a user runs answers ``--help`` with its usage and exit status 0 (a bare ``%`` in
one option's help once crashed ``python -m train --help``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# every `python -m ...` entry point of the product and its benchmarks, pipeline's subcommands included
COMMANDS = [
    ["pipeline"], ["pipeline", "build"], ["pipeline", "resample"], ["pipeline", "merge-manifest"],
    ["train"], ["eval"], ["eval.card"], ["search"], ["search.index"], ["search.serve"], ["search.export"],
    ["tools.demo"], ["tools.inspect_shards"], ["tools.make_sample_data"],
    *([f"bench.{path.stem}"] for path in sorted((REPO / "bench").glob("bench_*.py"))),
]  # fmt: skip


def test_the_command_list_covers_every_entry_point():
    """A new ``__main__`` module must join COMMANDS (eval/metrics.py's is a self-check, not a command)."""
    listed = {command[0] for command in COMMANDS}
    found = set()
    for path in REPO.glob("*/*.py"):
        if path.parts[-2] in ("tests", "docs") or 'if __name__ == "__main__"' not in path.read_text(encoding="utf-8"):
            continue
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        found.add(module.removesuffix(".__main__"))
    assert found - listed <= {"eval.metrics", "search.cli"}, found - listed


BENCHMARKS = [command for command in COMMANDS if command[0].startswith("bench.")]
# every bench script's --help in one interpreter (each imports torch: one import instead of one per script)
BENCH_HELP_DRIVER = """
import contextlib, io, json, runpy, sys
results = {}
for module in sys.argv[1:]:
    sys.argv, out = [module, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code or 0
    results[module] = [code, "usage:" in out.getvalue()]
print(json.dumps(results))
"""


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in BENCHMARKS], ids=" ".join)
def test_help_prints_usage_and_exits_0(command):
    done = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_every_benchmark_prints_usage_and_exits_0():
    modules = [command[0] for command in BENCHMARKS]
    done = subprocess.run([sys.executable, "-c", BENCH_HELP_DRIVER, *modules], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results == {module: [0, True] for module in modules}


PRODUCT_COMMANDS = [["pipeline", "build"], ["pipeline", "resample"], ["pipeline", "merge-manifest"], ["train"], ["eval"], ["eval.card"], ["search"],
                    ["search.index"], ["search.serve"], ["search.export"], ["tools.demo"], ["tools.inspect_shards"], ["tools.make_sample_data"]]  # fmt: skip
MAIN_OF = {"pipeline": "pipeline.__main__", "train": "train.__main__", "eval": "eval.__main__", "search": "search.cli"}


@pytest.mark.parametrize("command", PRODUCT_COMMANDS, ids=" ".join)
def test_every_option_of_every_command_shows_its_default(command, monkeypatch):
    """Each option's line in --help says its default (a value, on/off, none, or the help's own words)."""
    import argparse
    import importlib

    shown: list[argparse.ArgumentParser] = []

    def capture(parser: argparse.ArgumentParser, file=None) -> None:  # noqa: ANN001
        shown.append(parser)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", capture)
    main = importlib.import_module(MAIN_OF.get(command[0], command[0])).main
    with pytest.raises(SystemExit):
        main([*command[1:], "--help"])
    (parser,) = shown
    formatter = parser._get_formatter()
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    assert options or command == ["eval.card"]  # the card takes a run folder and nothing else
    for action in options:
        assert "default" in formatter._format_action(action).lower(), f"{' '.join(command)} {action.option_strings[0]}"


# every command's --help (and, for a build, everything before its first shard is written) needs neither torch nor
# webdataset: options live in torch-free modules (model/options.py, model/methods/, train/options.py, search/options.py)
LIGHT_COMMANDS = [["pipeline"], *PRODUCT_COMMANDS, ["bench.bench_startup"]]


@pytest.mark.parametrize("command", LIGHT_COMMANDS, ids=" ".join)
def test_help_of_a_light_command_imports_no_torch(command):
    """``python -X importtime`` names every module imported: torch (~1.5 s here) and webdataset must not be among them."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "pipeline" in imported or command[0] != "pipeline"
    assert not imported & {"torch", "webdataset", "open_clip"}, sorted(imported & {"torch", "webdataset", "open_clip"})
