"""``python -m pipeline build ... --dry-run``: the plan a build would run, without running it.

Reads the annotations, resolves every video, cuts the units and compares with an existing
``plan.json`` exactly as a build does, then reports what would be done and what it costs the
driver: the units (a Ray task each), how many are already built, the bytes of the task arguments
(what a Ray driver ships per task), and the driver's peak memory so far. Nothing is written.
"""

from __future__ import annotations

import pickle
import resource
import sys

from pipeline.build import PreparedBuild


def peak_memory_mib() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def plan_summary(prepared: PreparedBuild) -> dict:
    argument_bytes = [len(pickle.dumps(prepared.units[u], protocol=5)) for u in prepared.todo]
    return {
        "units": len(prepared.units),
        "videos": sum(len(unit) for unit in prepared.units),
        "units_of_this_job": len(prepared.mine),
        "units_to_build": len(prepared.todo),
        "videos_to_build": prepared.total_videos,
        "ray_tasks": len(prepared.todo),
        "task_argument_bytes": {"total": sum(argument_bytes), "max": max(argument_bytes, default=0)},
        "driver_peak_mib": peak_memory_mib(),
    }
