"""``python -m search.index ... --distributor ray``: encoding a collection on a Ray cluster's GPUs or CPUs.

The driver does what rank 0 does in a torchrun job: it loads the model once to describe the
index (fingerprint, arrays, row shapes), checks an existing index against it, deletes killed runs'
leftovers and finds the shards no committed part covers. It then cuts the new shards, in order,
into groups of ``shards_per_task`` and runs one Ray task per group. A task encodes its group with
``ShareIndexer``, the loop a torchrun rank runs, into parts named after the group
(``runR-rankG-S``), so the parts sorted by name hold the rows in shard order: the same row order
as a single-process run (a torchrun job deals shards round-robin instead). Last the driver lists
the parts in ``index.json`` and builds the ANN file, as rank 0 does.

- A worker process keeps the model it loaded for the next task of the same job (Ray reuses
  workers), so small groups cost one load per worker, not one per task.
- A task retried after its worker or node died (Ray's ``max_retries``) keeps the parts its earlier
  attempt committed and encodes only the rest of its group; half-written parts are never listed
  and are deleted when the driver finishes.
- A group Ray gives up on has its unindexed shards reported in ``failed_shards`` (exit status 1),
  and the next run indexes them, like a shard that failed to read.
- As under torchrun, the tasks of one run cannot see each other's new keys: a key that two groups
  of the same run both hold is indexed twice (keys already in the index are always skipped).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from tqdm import tqdm

from model.trained_model import TrainedModel, load_trained_model, model_fingerprint
from runtime.distributed import DistInfo
from runtime.ray_cluster import RayOptions, describe_error, ray_session
from search.index_format import IndexFormatError, committed_parts
from search.indexer import (
    SKIP_REASONS,
    IndexJob,
    IndexSettings,
    ShareIndexer,
    check_existing_index,
    clean_leftovers,
    describe_model,
    part_name_fields,
    pending_work,
    summarize,
    write_index_manifest,
)
from search.options import RayIndexOptions
from shards.storage import StorageError, Store

logger = logging.getLogger(__name__)
TASK_PACKAGES = ["search", "eval", "model", "runtime", "shards"]  # what an index task imports on a worker node
RETRIED_ERRORS = (StorageError, OSError)


@dataclass(frozen=True)
class ModelSource:
    """How to load the model again on a worker (the checkpoint must be reachable from every node)."""

    checkpoint: str
    checkpoint_format: str = "auto"
    base_weights: str | None = None
    max_frames: int | None = None
    max_words: int | None = None

    def load(self) -> TrainedModel:
        return load_trained_model(self.checkpoint, self.checkpoint_format, self.base_weights, self.max_frames, self.max_words)


_loaded: dict[tuple, tuple[TrainedModel, str]] = {}  # this worker process's model: (source, device) -> (model, fingerprint)


def _worker_model(source: ModelSource, device: torch.device) -> tuple[TrainedModel, str]:
    key = (source, str(device))
    if key not in _loaded:
        _loaded.clear()
        trained = source.load()
        trained.model.to(device).eval()
        _loaded[key] = (trained, model_fingerprint(trained.model))
    return _loaded[key]


def index_group_task(slot: int, slots: int, urls: list[str], source: ModelSource, shards_location: str, out: str, description: dict,
                     run: int, known_keys: list[str], settings: IndexSettings, cpus: float) -> dict:  # fmt: skip
    """One Ray task: the shards ``urls`` (group ``slot`` of ``slots``) encoded into parts of their own."""
    import ray

    torch.set_num_threads(max(1, int(cpus)))
    device = torch.device("cuda", 0) if ray.get_gpu_ids() else torch.device("cpu")
    trained, fingerprint = _worker_model(source, device)
    if fingerprint != description["model_sha256"]:
        raise IndexFormatError(f"{source.checkpoint}: on this node the weights hash to {fingerprint[:12]}..., the driver's to "
                               f"{description['model_sha256'][:12]}...: every node must read the same checkpoint")  # fmt: skip
    store = Store(out)
    parts = committed_parts(store)  # a retried attempt keeps what its earlier attempt committed
    done = {shard["url"] for part in parts.values() for shard in part["shards"]}
    mine = [fields[2] for name in parts if (fields := part_name_fields(name)) and fields[:2] == (run, slot)]
    info = DistInfo(rank=slot, world_size=slots, local_rank=0, device=device)
    indexer = ShareIndexer(trained, store, description, run, info, settings, shards_location, set(known_keys), max(mine, default=-1) + 1)
    return indexer.run_all([url for url in urls if url not in done])


def index_shards_on_ray(source: ModelSource, shards_location: str, out: str, settings: IndexSettings, ray_options: RayOptions,
                        options: RayIndexOptions, show_progress: bool = True) -> dict:  # fmt: skip
    """Index the shards not yet in the index at ``out`` on the Ray cluster; returns the summary."""
    store = Store(out)
    description = describe_model(source.load(), settings, torch.device("cpu"))
    check_existing_index(store, description, settings, shards_location)
    clean_leftovers(store)
    job = pending_work(store, description, shards_location)
    groups = [job.new_urls[i : i + options.shards_per_task] for i in range(0, len(job.new_urls), options.shards_per_task)]
    logger.info("%d of %d shard(s) already indexed; indexing %d in %d Ray task(s)", len(job.all_urls) - len(job.new_urls), len(job.all_urls),
                len(job.new_urls), len(groups))  # fmt: skip
    everyone: list[dict] = []
    if groups:
        with ray_session(ray_options, TASK_PACKAGES) as ray:
            gpus = options.gpus_per_task if options.gpus_per_task is not None else (1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)
            task = ray.remote(index_group_task).options(num_cpus=options.cpus_per_task, num_gpus=gpus, max_retries=ray_options.max_retries,
                                                         retry_exceptions=list(RETRIED_ERRORS))  # fmt: skip
            keys = ray.put(sorted(job.known_keys))
            pending = {task.remote(slot, len(groups), urls, source, shards_location, store.url, description, job.run, keys, settings,
                                   options.cpus_per_task): slot for slot, urls in enumerate(groups)}  # fmt: skip
            everyone = _collect(ray, pending, groups, store, job, show_progress)
    clean_leftovers(store)  # what killed attempts left half-written (no task runs any more)
    summary = summarize(job, everyone) | _rows_of_this_run(store, job)
    return summary | write_index_manifest(store, description, settings)


def _collect(ray, pending: dict, groups: list[list[str]], store: Store, job: IndexJob, show_progress: bool) -> list[dict]:  # noqa: ANN001
    """Every task's stats; a task Ray gave up on reports its group's unindexed shards as failed."""
    everyone = []
    bar = tqdm(total=len(job.new_urls), unit="shard", disable=not show_progress)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            slot = pending.pop(ready[0])
            try:
                everyone.append(ray.get(ready[0]))
            except ray.exceptions.RayError as error:
                reason = describe_error(error)
                done = {shard["url"] for part in committed_parts(store).values() for shard in part["shards"]}
                failed = [{"url": url, "reason": f"Ray task failed: {reason}"} for url in groups[slot] if url not in done]
                logger.warning("index task %d failed after its retries (%s): %d shard(s) left for the next run", slot, reason, len(failed))
                everyone.append({"rows": 0, "shards": 0, "failed_shards": failed, "skipped": dict.fromkeys(SKIP_REASONS, 0)})
            bar.update(len(groups[slot]))
    finally:
        bar.close()
    return everyone


def _rows_of_this_run(store: Store, job: IndexJob) -> dict:
    """New rows and shards counted from this run's committed parts: exact also when a task was retried."""
    parts = [part for name, part in committed_parts(store).items() if (fields := part_name_fields(name)) and fields[0] == job.run]
    return {"new_videos": sum(part["rows"] for part in parts), "new_shards": sum(len(part["shards"]) for part in parts)}
