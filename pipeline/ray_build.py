"""``python -m pipeline build ... --distributor ray``: the local build's plan, one Ray task per unit.

What Ray does and what stays ours:
- **Plan and bytes are the local build's.** The driver plans the units exactly as a local build
  does (``prepare_build``: same ``plan.json``, same skip of finished units); each task builds one
  unit with ``write_unit``, the function the local pool uses, decoding its videos one after the
  other in the task's own process. A unit's shards therefore cannot depend on where it ran, and
  ``merge_manifest`` joins the unit records as for any build.
- **Ray schedules and retries.** A task whose worker process or node dies is retried by Ray
  (``max_retries``); an application error that may pass (a storage or network ``OSError``) is
  retried the same bounded number of times. A video that fails to decode is never an exception:
  it is a recorded failure of its unit, as locally, so no video makes a task retry forever.
  After its last attempt a unit is reported as failed (named, with the error) and the rest of the
  build goes on; the same command later builds only what is missing.
- **Nothing half-written is visible.** Shards are published by the same atomic writer (rename on
  disk, one upload to a bucket) and the unit record last. An attempt starts by deleting its own
  unit's hidden leftovers from a killed earlier attempt.
- **Per-node concurrency** comes from the CPUs a task reserves (``runtime.ray_cluster.cpus_per_task``).
- **Progress**: a small actor on the driver's node holds each unit's videos done and failures;
  tasks report after every video and the driver draws one bar for the whole job from it. A retried
  unit starts again from zero there, so the bar never counts a video twice. Progress is never a
  reason to fail: while the actor is unreachable the bar shows the last reports (finished units
  are counted by the driver itself), and Ray restarts a lost actor.
- **Backpressure**: at most ``in_flight`` tasks are submitted ahead, so the driver and the object
  store hold the arguments of those only, whatever the size of the build.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tqdm import tqdm

from pipeline.build import BuildOptions, BuildReport, PlannedVideo, PreparedBuild, decode_tasks, prepare_build, unit_stems, write_unit
from pipeline.decode_worker import decode_one
from pipeline.extract import ExtractionSettings
from pipeline.records import VideoRecord
from runtime.ray_cluster import RayOptions, cpus_per_task, describe_error, node_cpus, ray_session
from shards.manifest import merge_manifest, this_node
from shards.storage import StorageError, Store

# the packages a build task imports on a worker node (shipped with the job; see ray_cluster)
TASK_PACKAGES = ["pipeline", "shards", "runtime"]
RETRIED_ERRORS = (StorageError, OSError)  # may pass on a second attempt (an upload, a dropped connection)


@dataclass
class UnitProgress:
    """One unit's latest report: videos done and failures so far in its current attempt."""

    videos: int = 0
    failures: int = 0


@dataclass
class JobProgress:
    """The whole job as the driver's bar shows it."""

    videos: int = 0
    failures: int = 0
    samples: int = 0
    shards: int = 0
    units_done: int = 0
    failed_units: dict[int, str] = field(default_factory=dict)

    def postfix(self) -> dict:
        shown = {"shards": self.shards, "failures": self.failures}
        if self.failed_units:
            shown["failed_units"] = len(self.failed_units)
        return shown


def _progress_actor_class(ray):  # noqa: ANN001, ANN202 - the ray module, an actor class
    @ray.remote(num_cpus=0)
    class BuildProgress:
        def __init__(self) -> None:
            self.units: dict[int, UnitProgress] = {}

        def report(self, unit: int, videos: int, failures: int) -> None:
            self.units[unit] = UnitProgress(videos, failures)

        def snapshot(self) -> dict[int, UnitProgress]:
            return self.units

    return BuildProgress


def build_unit_task(unit: int, videos: list[PlannedVideo], videos_root: str, out: str, settings: ExtractionSettings,
                    options: BuildOptions, progress: object) -> dict:  # fmt: skip
    """One Ray task: unit ``unit`` from its videos to visible shards and a unit record."""
    import ray

    store = Store(out)
    store.remove_partials(unit_stems(options.prefix, [unit]))  # what a killed attempt of this unit left
    node = this_node() | {"ip": ray.util.get_node_ip_address(), "ray_node_id": ray.get_runtime_context().get_node_id()}
    counts = UnitProgress()

    def on_video(failed: bool) -> None:
        counts.videos += 1
        counts.failures += failed
        progress.report.remote(unit, counts.videos, counts.failures)

    record = write_unit(unit, videos, map(decode_one, decode_tasks(videos, settings)), store, settings, options, videos_root,
                        on_video, node)  # fmt: skip
    return {"unit": unit, "samples": len(record.keys), "failures": len(record.failures), "shards": len(record.shards)}


def build_shards_on_ray(records: list[VideoRecord], videos_root: str, store: Store, settings: ExtractionSettings, options: BuildOptions,
                        ray_options: RayOptions, prepared: PreparedBuild | None = None) -> BuildReport:  # fmt: skip
    """Builds every unfinished unit on the Ray cluster; merges the manifest once all are built.

    ``prepared``: the units to build when they are not the plan's own (a retry round, pipeline/retry.py)."""
    if options.num_jobs != 1:
        raise ValueError("--distributor ray schedules the whole build itself: leave out --num-jobs/--job-index (and Slurm array variables)")
    prepared = prepared or prepare_build(records, videos_root, store, settings, options)
    job = JobProgress()
    with ray_session(ray_options, TASK_PACKAGES) as ray:
        cluster_cpus = node_cpus(ray)
        cpus = cpus_per_task(options.workers, cluster_cpus)
        task = ray.remote(build_unit_task).options(num_cpus=cpus, max_retries=ray_options.max_retries, retry_exceptions=list(RETRIED_ERRORS))
        progress_actor = _progress_actor_class(ray).options(scheduling_strategy=_on_this_node(ray), max_restarts=-1).remote()
        window = ray_options.in_flight or max(2, int(2 * sum(cluster_cpus) / cpus))
        _run_tasks(ray, task, progress_actor, prepared, videos_root, store.url_of(""), settings, options, window, job)
    manifest = None if job.failed_units else merge_manifest(store)
    return BuildReport(
        units_total=len(prepared.units),
        units_built=job.units_done,
        units_skipped=len(prepared.mine) - len(prepared.todo),
        samples_written=job.samples,
        failures=job.failures,
        manifest=manifest,
        failed_units=job.failed_units,
        **prepared.missing_counts(),
    )


def _on_this_node(ray):  # noqa: ANN001, ANN202
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def _run_tasks(ray, task, progress_actor, prepared, videos_root: str, out: str, settings: ExtractionSettings,  # noqa: ANN001
               options: BuildOptions, window: int, job: JobProgress) -> None:  # fmt: skip
    """Submits units ``window`` at a time, collects results and keeps the bar on the job's state."""
    queue = list(reversed(prepared.todo))
    pending: dict[object, int] = {}
    finished: dict[int, UnitProgress] = {}
    reported: dict[int, UnitProgress] = {}
    bar = tqdm(total=prepared.total_videos, unit="video", disable=not options.show_progress or not prepared.todo, smoothing=0.1)
    last_draw = 0.0
    try:
        while queue or pending:
            while queue and len(pending) < window:
                unit = queue.pop()
                pending[task.remote(unit, prepared.units[unit], videos_root, out, settings, options, progress_actor)] = unit
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0.5, fetch_local=True)
            for ref in ready:
                unit = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:
                    job.failed_units[unit] = describe_error(error)
                    bar.write(f"unit {unit} failed after its retries: {job.failed_units[unit]}")
                    continue
                finished[unit] = UnitProgress(len(prepared.units[unit]), result["failures"])
                job.shards += result["shards"]
                job.samples += result["samples"]
                job.units_done += 1
            if time.monotonic() - last_draw > 0.5 or not (queue or pending):
                reported = _snapshot(ray, progress_actor, reported)
                _draw(bar, job, finished, reported)
                last_draw = time.monotonic()
    finally:
        bar.close()


def _snapshot(ray, progress_actor, last: dict[int, UnitProgress]) -> dict[int, UnitProgress]:  # noqa: ANN001
    """The running units' latest reports; the last ones known while the actor is unreachable (its node
    lost: Ray restarts it), so the bar can stall for a moment but the build never fails on it."""
    try:
        return ray.get(progress_actor.snapshot.remote(), timeout=10)
    except ray.exceptions.RayError:
        return last


def _draw(bar: tqdm, job: JobProgress, finished: dict[int, UnitProgress], reported: dict[int, UnitProgress]) -> None:
    """Finished units count in full; running ones as their current attempt last reported."""
    units = reported | finished
    job.videos = sum(p.videos for p in units.values())
    job.failures = sum(p.failures for p in units.values())
    bar.n = job.videos
    bar.set_postfix(job.postfix(), refresh=False)
    bar.refresh()
