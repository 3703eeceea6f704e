"""Joining a Ray cluster, for every command that can spread its work over one (build, index).

One place decides how this project talks to Ray: which cluster (``--ray-address``, else Ray's
own rule: ``RAY_ADDRESS``, then a cluster started on this machine with ``ray start``, then a new
local one), which of our packages travel to the workers (``runtime_env`` ``py_modules``: the
nodes need the same Python packages installed, not this checkout), which environment variables
travel with them (object-store credentials and endpoints, the ffmpeg override), and how many
CPUs a task asks for so that a node runs at most ``--workers`` of them at once.

Ray is imported only here and in the distributors, and only when ``--distributor ray`` is
asked for: a local build never loads it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import fsspec

REPO_ROOT = Path(__file__).resolve().parent.parent
RESOURCE_UNITS = 10_000  # Ray's resource precision: quantities are whole multiples of 1e-4
# what a task on another node needs to reach the same buckets and the same ffmpeg as the driver
FORWARDED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                 "AWS_REGION", "AWS_PROFILE", "PIPELINE_FFMPEG")  # fmt: skip


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: Ray's own rule (RAY_ADDRESS, a cluster started here, else a local one)
    max_retries: int = 3  # new attempts of a task whose worker process or node died
    in_flight: int = 0  # tasks submitted ahead of completion; 0: twice the cluster's CPUs


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or the cluster at the address cannot be joined."""


def import_ray():  # noqa: ANN201 - the ray module
    try:
        import ray
    except ImportError as error:
        raise RayUnavailableError(f"--distributor ray needs the ray package (pip install -e '.[ray]', or -r requirements-ray.txt): {error}") from error
    return ray


def forwarded_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = dict(os.environ) if environ is None else environ
    return {name: environ[name] for name in FORWARDED_ENV if environ.get(name)}


@contextmanager
def ray_session(options: RayOptions, packages: list[str]) -> Iterator[object]:
    """Joins (or starts) the cluster with our ``packages`` shipped to its workers; leaves it on exit."""
    ray = import_ray()
    runtime_env = {"py_modules": [str(REPO_ROOT / name) for name in packages], "env_vars": forwarded_environment()}
    try:
        ray.init(address=options.address, runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RayUnavailableError(f"cannot join the Ray cluster at {options.address or 'the default address'}: {error}") from error
    try:
        yield ray
    finally:
        ray.shutdown()


def task_location(location: str) -> str:
    """A local path made absolute, a URL as it is: a Ray task runs in another folder, maybe on another
    machine (fsspec's rule decides what is a URL, as it does for every Store)."""
    protocol, _ = fsspec.core.split_protocol(location)
    return location if protocol else os.path.abspath(location)


def node_cpus(ray) -> list[float]:  # noqa: ANN001 - the ray module
    """CPUs of each alive node that has any (a head started with --num-cpus 0 runs no tasks)."""
    return [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0]


def cpus_per_task(workers: int, cpus_of_nodes: list[float]) -> float:
    """What one task reserves so that no node runs more than ``workers`` tasks at once.

    ``workers`` 0 means one task per CPU, as the local pool's default of one process per core.
    Otherwise the largest node's CPUs are divided by ``workers``: that node then fits exactly
    ``workers`` tasks and every smaller node fewer. Ray counts resources in units of 1e-4, so
    the share is rounded down to one: rounding up could fit one task too few on the largest node.
    """
    if workers <= 0 or not cpus_of_nodes:
        return 1.0
    return math.floor(max(cpus_of_nodes) / workers * RESOURCE_UNITS) / RESOURCE_UNITS


def describe_error(error: BaseException) -> str:
    """One line for a task Ray gave up on: the exception's own message, not Ray's traceback banner."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
