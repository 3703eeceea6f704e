"""The project installs (``pip install .``) and every command then works from any folder.

The venv sees the test machine's packages (``--system-site-packages``), so pip checks that the pinned
dependencies in pyproject.toml (read from the requirements files) are satisfied by that set without
downloading torch again; the project itself is built from a copy of the repository as a wheel, so
package data that is not declared (recipes, model configs) would be missing and the test would fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


def _run(command: list[str], cwd, timeout: float = 600) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_pip_install_dot_gives_working_commands_from_any_folder(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(".git", "__pycache__", "build", "*.egg-info", "demo_out", "bench_out",
                                                                     ".pytest_cache", ".ruff_cache", "test_artifacts"))  # fmt: skip
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)], cwd=elsewhere)
    shutil.rmtree(source)  # nothing may come from the copy the wheel was built from
    where = _run([python, "-c", "import pipeline, train.recipes as r, model.backbone as b, os; "
                  "print(pipeline.__file__); print(len(r.recipe_names())); print(sorted(os.listdir(b.CONFIG_DIR)))"], cwd=elsewhere)  # fmt: skip
    module_file, recipes, configs = where.splitlines()
    assert str(env_dir) in module_file and str(REPO_ROOT) not in module_file
    assert int(recipes) == len(list((REPO_ROOT / "recipes").glob("*.toml"))) > 0
    assert "tiny-ViT.json" in configs
    for module in ("pipeline", "train", "eval", "search", "search.index", "search.serve", "tools.demo"):
        assert "usage:" in _run([python, "-m", module, "--help"], cwd=elsewhere), module
    assert "usage:" in _run([str(env_dir / "bin" / "clip4clip-train"), "--help"], cwd=elsewhere)
    # a recipe resolves by name from the installed package (its options printed with their origin)
    shown = subprocess.run([python, "-m", "train", "--recipe", "clip4clip-msrvtt-meanP", "--help"], cwd=elsewhere, capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]


def test_the_extras_name_each_requirements_file_once():
    """Each dependency is listed once: pyproject reads the requirements files, requirements-dev.txt joins them."""
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    dynamic = project["tool"]["setuptools"]["dynamic"]
    files = dynamic["dependencies"]["file"] + [f for extra in dynamic["optional-dependencies"].values() for f in extra["file"]]
    assert sorted(files) == ["requirements-ray.txt", "requirements-search.txt", "requirements-test.txt", "requirements.txt"]
    names: list[str] = []
    for name in files:
        for line in (REPO_ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                assert not line.startswith("-"), f"{name}: {line!r} cannot be read by setuptools"
                assert "==" in line, f"{name}: {line!r} is not pinned"
                names.append(line.split("==")[0].split("[")[0].lower().replace("_", "-"))
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    dev = [line for line in (REPO_ROOT / "requirements-dev.txt").read_text().splitlines() if line.startswith("-r ")]
    assert sorted(line[3:] for line in dev) == sorted(files)
    assert sys.version_info >= (3, 11)
