"""Every method's numbers from a tiny run equal those pinned before its code moved
(tests/method_pins.py): training losses, evaluation metrics and scores, search scores, the
checkpoint's layout and the options' names, defaults and choices."""

from __future__ import annotations

import json
import math

import pytest

from tests.method_pins import METHOD_RUNS, PINS_FILE, config_fields, method_numbers

PINNED = json.loads(PINS_FILE.read_text())


def assert_same(found: object, pinned: object, where: str) -> None:
    if isinstance(pinned, dict):
        assert sorted(found) == sorted(pinned), f"{where}: keys {sorted(found)} != {sorted(pinned)}"
        for key in pinned:
            assert_same(found[key], pinned[key], f"{where}.{key}")
    elif isinstance(pinned, list):
        assert len(found) == len(pinned), where
        for i, (a, b) in enumerate(zip(found, pinned, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(pinned, float):
        # CPU kernels are deterministic; the tolerance covers only another machine's float rounding
        assert math.isclose(found, pinned, rel_tol=2e-5, abs_tol=1e-6), f"{where}: {found} != pinned {pinned}"
    else:
        assert found == pinned, f"{where}: {found!r} != pinned {pinned!r}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("pins")


@pytest.mark.parametrize("method", list(METHOD_RUNS))
def test_tiny_run_numbers_are_the_pinned_ones(method, workdir):
    assert_same(method_numbers(method, workdir), PINNED[method], method)


# options added after the pin, on purpose; any other difference in the option table fails
ADDED_SINCE_PIN = {"methods_from",  # the modules of plug-in methods (docs/adding-a-method.md)
                   "xpool", "xpool_heads", "xpool_dropout",  # X-Pool (model/methods/xpool.py)
                   "tmass", "tmass_prior", "tmass_prior_std", "tmass_support_weight", "tmass_trials", "tmass_seed"}  # T-MASS  # fmt: skip
CHOICES_ADDED_SINCE_PIN = {"optimizer": ["xpool-adamw"], "checkpoint_format": ["xpool", "tmass"]}  # appended after the pinned ones


def test_options_are_the_pinned_ones():
    found = config_fields()
    assert set(found) - set(PINNED["_config_fields"]) == ADDED_SINCE_PIN
    for name, added in CHOICES_ADDED_SINCE_PIN.items():
        assert found[name][2][-len(added) :] == added
        found[name] = [*found[name][:2], found[name][2][: -len(added)]]
    assert_same({name: found[name] for name in PINNED["_config_fields"]}, PINNED["_config_fields"], "options")
