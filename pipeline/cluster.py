"""Which share of the units this job builds, so N independent jobs cover a build exactly once.

Explicit ``--num-jobs/--job-index`` win; otherwise a Slurm job array
(SLURM_ARRAY_TASK_COUNT / SLURM_ARRAY_TASK_ID, offset by SLURM_ARRAY_TASK_MIN) or a
multi-task step (SLURM_NTASKS / SLURM_PROCID) is recognised; otherwise one job does all.
Round-robin assignment keeps every job's share balanced even when the last unit is short.
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def job_share(num_jobs: int | None, job_index: int | None, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    env = os.environ if env is None else env
    if num_jobs is None and job_index is None:
        if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            num_jobs = int(env["SLURM_ARRAY_TASK_COUNT"])
            job_index = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
            num_jobs, job_index = int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"])
        else:
            num_jobs, job_index = 1, 0
    if num_jobs is None or job_index is None:
        raise ValueError("--num-jobs and --job-index go together")
    if num_jobs < 1 or not 0 <= job_index < num_jobs:
        raise ValueError(f"job index {job_index} is not in [0, {num_jobs})")
    return num_jobs, job_index


def units_for_job(num_units: int, num_jobs: int, job_index: int) -> list[int]:
    return list(range(job_index, num_units, num_jobs))
