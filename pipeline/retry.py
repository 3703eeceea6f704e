"""``python -m pipeline build ... --retry-failures``: attempt again the videos in a build's failures.jsonl.

After a network outage, a fixed file or a finished download, the failed videos are attempted again
without touching what was built:

- **A retry round** is written first (``_build/retries/NNN.json``, shards/manifest.py): the keys of
  the videos that had failed when it started, cut into new units numbered after every unit so far.
  Its units are built by the same ``write_unit`` as any unit, so shards of the plan and of earlier
  rounds stay byte-identical; a retried video that succeeds becomes a sample of a new shard of the
  same build, one that fails again is recorded again by its new unit.
- **The latest attempt counts**: ``merge_manifest`` lists a video's failure only while no later unit
  retried it, so failures.jsonl and the manifest describe the build as it stands, with per-round
  figures under ``retries``.
- **Idempotent and resumable**: a round whose units are not all built is finished before a new one
  is opened (a killed retry resumes with the same command); with no failure left there is nothing
  to do and nothing is written.
- **Slurm arrays** share a round: every task of one array job (``SLURM_ARRAY_JOB_ID``, else
  ``SLURM_JOB_ID`` for a multi-task step) joins the round its first task opened, and builds its
  share of the round's units by the same round-robin as a build. Jobs split by hand with
  ``--num-jobs`` and no Slurm should be started together: one that starts after the round is
  complete opens the next round. Then ``python -m pipeline merge-manifest`` as after any split build.
- **Ray** builds the round's units as tasks, as it builds any unit.

The annotations and settings must be the build's own (the plan is checked as on every rerun): the
retried videos are found in the freshly resolved plan by key, so a file that now exists is found.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime

from pipeline.build import BuildOptions, PlannedVideo, PreparedBuild, prepare_build, unit_stems
from pipeline.cluster import units_for_job
from pipeline.extract import ExtractionSettings
from pipeline.records import VideoRecord
from shards.manifest import (
    BuildStateError,
    completed_units,
    latest_attempts,
    num_units_built_for,
    read_plan,
    read_retry_rounds,
    read_unit_record,
    retry_round_name,
)
from shards.storage import Store


def retry_token(environ: dict | None = None) -> str | None:
    """What tells the tasks of one scheduler job apart from a later job (None: not under Slurm)."""
    environ = os.environ if environ is None else environ
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID"):
        if environ.get(name):
            return f"{name}={environ[name]}"
    return None


def round_units(retry: dict, by_key: dict[str, PlannedVideo], samples_per_shard: int) -> list[list[PlannedVideo]]:
    """A round's videos (in its order) cut into its units, as a build cuts its plan."""
    unknown = [key for key in retry["keys"] if key not in by_key]
    if unknown:
        raise BuildStateError(f"retry round {retry['round']} names videos the plan does not hold ({unknown[:5]}): the build's records "
                              "were changed by hand")  # fmt: skip
    videos = [by_key[key] for key in retry["keys"]]
    units = [videos[i : i + samples_per_shard] for i in range(0, len(videos), samples_per_shard)]
    if len(units) != retry["num_units"]:
        raise BuildStateError(f"retry round {retry['round']} records {retry['num_units']} units, its videos make {len(units)}")
    return units


def standing_failures(store: Store, num_units: int) -> list[dict]:
    """The failures as failures.jsonl lists them after a merge: each video's latest attempt, if it failed."""
    failures, _ = latest_attempts([read_unit_record(store, unit) for unit in range(num_units)])
    return list(failures.values())


def prepare_retry(records: list[VideoRecord], videos_root: str, store: Store, settings: ExtractionSettings, options: BuildOptions,
                  write_round: bool = True, token: str | None = None) -> tuple[PreparedBuild, int] | None:  # fmt: skip
    """The units of the retry round to build now (an unfinished round first) and its number, or None
    when no failure stands. ``write_round=False`` (a dry run) writes and deletes nothing."""
    base = prepare_build(records, videos_root, store, settings, options, write_plan=write_round)
    plan = read_plan(store)
    done = completed_units(store)
    unbuilt = [u for u in range(plan["num_units"]) if u not in done]
    if unbuilt:
        raise BuildStateError(f"{store.url}: {len(unbuilt)} of the build's {plan['num_units']} units are not built yet; finish the build "
                              "(the same command without --retry-failures) before retrying its failures")  # fmt: skip
    rounds = read_retry_rounds(store)
    by_key = {video.key: video for unit in base.units for video in unit}
    units = list(base.units)
    for retry in rounds:
        units.extend(round_units(retry, by_key, options.samples_per_shard))
    latest = rounds[-1] if rounds else None
    unfinished = latest is not None and any(u not in done for u in _unit_range(latest))
    same_job = latest is not None and token is not None and latest.get("token") == token
    if latest is not None and (unfinished or same_job):
        current = latest
    else:
        failures = standing_failures(store, num_units_built_for(plan, rounds))
        if not failures:
            return None
        keys = [failure.get("key") or failure["video_id"] for failure in failures]
        current = {"round": len(rounds) + 1, "first_unit": len(units), "num_units": math.ceil(len(keys) / options.samples_per_shard),
                   "keys": keys, "token": token, "started": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        if write_round:
            current = _write_or_join_round(store, current)
        units.extend(round_units(current, by_key, options.samples_per_shard))
    mine = [current["first_unit"] + i for i in units_for_job(current["num_units"], options.num_jobs, options.job_index)]
    todo = [u for u in mine if u not in done]
    if write_round:
        store.remove_partials(unit_stems(options.prefix, todo))
    missing = sum(video.record.missing for u in _unit_range(current) for video in units[u])
    return PreparedBuild(units, mine, todo, base.ignored_missing, missing), current["round"]


def _unit_range(retry: dict) -> range:
    return range(retry["first_unit"], retry["first_unit"] + retry["num_units"])


def _write_or_join_round(store: Store, retry: dict) -> dict:
    """Writes the round, or joins the same round another task of this job wrote a moment before."""
    name = retry_round_name(retry["round"])
    if store.exists(name):
        existing = json.loads(store.read_bytes(name))
        if existing["keys"] != retry["keys"] or existing["first_unit"] != retry["first_unit"]:
            raise BuildStateError(f"{store.url_of(name)}: another retry of this build opened round {retry['round']} with other videos; "
                                  "wait for it to finish, then retry again")  # fmt: skip
        return existing
    store.write_bytes(name, json.dumps(retry, indent=1, sort_keys=True).encode("utf-8"))
    return retry
