"""The build: annotations -> units -> (worker processes decode) -> atomic shards + records.

Workers only decode (pure function of one video); the parent process owns all writing, in
unit order, so each shard's contents and order are the same however many workers ran and
whether the build was interrupted. Failures of single videos are recorded with the unit and
never stop the build.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from tqdm import tqdm

from pipeline.cluster import units_for_job
from pipeline.decode_worker import DecodeTask, decode_one
from pipeline.extract import ExtractedVideo, ExtractionSettings, VideoDecodeError
from pipeline.keys import unique_keys
from pipeline.records import VideoRecord
from pipeline.video_index import VideoIndex, is_url
from pipeline.windows import Windows, known_durations, window_records
from shards.manifest import (
    PLAN_NAME,
    ShardStats,
    UnitRecord,
    check_plan,
    completed_units,
    failure_kind,
    merge_manifest,
    shard_name,
    this_node,
    unit_record_name,
    videos_digest,
    write_or_check_plan,
    write_unit_record,
)
from shards.sample_format import FORMAT_VERSION, encode_sample
from shards.storage import Store
from shards.writer import AtomicShardWriter


@dataclass(frozen=True)
class BuildOptions:
    prefix: str = "shard"
    samples_per_shard: int = 100
    max_shard_bytes: int | None = None
    workers: int = 0  # 0: one per core
    num_jobs: int = 1
    job_index: int = 0
    show_progress: bool = True
    ignore_missing: bool = False  # drop annotations whose file is absent (a partial download)
    windows: Windows | None = None  # cut videos without a segment into overlapping windows (pipeline/windows.py)
    holdout: dict | None = None  # this build is one part of a --val-fraction split (pipeline/holdout.py)

    def __post_init__(self) -> None:
        if self.samples_per_shard < 1:
            raise ValueError("samples_per_shard must be >= 1")
        if "." in self.prefix or "/" in self.prefix or not self.prefix:
            raise ValueError(f"shard prefix {self.prefix!r} must be non-empty, without '.' or '/'")


@dataclass
class BuildReport:
    units_total: int
    units_built: int
    units_skipped: int
    samples_written: int
    failures: int
    manifest: dict | None
    failed_units: dict[int, str] = field(default_factory=dict)  # unit -> why (a distributor gave up on it)
    ignored_missing: int = 0  # annotations --ignore-missing dropped (no file)
    missing: int = 0  # annotated videos planned without a file (each a failure)
    videos_planned: int = 0  # videos in the whole plan


@dataclass
class PlannedVideo:
    key: str
    record: VideoRecord


RecordExpansion = Callable[[list[VideoRecord]], list[VideoRecord]]


def plan_units(
    records: list[VideoRecord], videos_root: str, samples_per_shard: int, ignore_missing: bool = False, expand: RecordExpansion | None = None
) -> tuple[list[list[PlannedVideo]], int]:
    """Resolves files and keys, then cuts the ordered list into fixed-size units.

    Returns the units and how many annotations were dropped by ``ignore_missing`` (files
    that do not exist; a path escaping the videos folder or an id matching two files is
    never dropped silently). ``expand``: the resolved records into the samples to plan (--windows).
    """
    index = VideoIndex(videos_root)
    resolved = [index.resolve(record) for record in records]
    kept = [r for r in resolved if not (ignore_missing and r.missing)]
    ignored = len(resolved) - len(kept)
    if expand is not None:
        kept = expand(kept)
    keys = unique_keys(record.video_id for record in kept)
    planned = [PlannedVideo(key, record) for key, record in zip(keys, kept, strict=True)]
    units = [planned[i : i + samples_per_shard] for i in range(0, len(planned), samples_per_shard)]
    return units, ignored


def build_plan_document(units: list[list[PlannedVideo]], settings: ExtractionSettings, options: BuildOptions, ignored_missing: int) -> dict:
    entries = [
        (v.key, v.record.reference, v.record.captions, v.record.split, *([list(v.record.span)] if v.record.span else []))
        for unit in units
        for v in unit
    ]
    return {
        **({"windows": options.windows.to_json()} if options.windows else {}),
        **({"holdout": options.holdout} if options.holdout else {}),
        "format": FORMAT_VERSION,
        "prefix": options.prefix,
        "samples_per_shard": options.samples_per_shard,
        "max_shard_bytes": options.max_shard_bytes,
        "settings": settings.to_json(),
        "num_units": len(units),
        "num_videos": len(entries),
        "ignored_missing": ignored_missing,
        "videos_digest": videos_digest(entries),
    }


def _decoded_stream(tasks: list[DecodeTask], workers: int) -> Iterator[ExtractedVideo | VideoDecodeError]:
    if workers <= 1 or len(tasks) <= 1:
        yield from map(decode_one, tasks)
        return
    # spawn: the parent may hold s3fs/aiohttp threads, which fork would copy mid-state
    with multiprocessing.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(decode_one, tasks, chunksize=1)


def _sample_metadata(video: PlannedVideo, extracted: ExtractedVideo, videos_root: str, settings: ExtractionSettings) -> dict:
    record = video.record
    source = extracted.source
    display = source.display_size
    metadata = {
        "key": video.key,
        "video_id": record.video_id,
        "captions": record.captions,
        "split": record.split,
        "source": {
            "reference": record.reference,
            "file": _file_name(record.path, videos_root),
            "duration_s": source.duration_s,
            "decoded_s": extracted.decoded_s,
            "fps": source.fps,
            "width": source.width,  # as stored
            "height": source.height,
            "sample_aspect": f"{source.sample_aspect[0]}:{source.sample_aspect[1]}",
            "rotation_degrees": source.rotation_degrees,
            "display_width": display[0] if display else None,  # as a player shows it
            "display_height": display[1] if display else None,
            "codec": source.codec,
        },
        "frames": {
            "count": len(extracted.frames_jpeg),
            "timestamps_s": extracted.timestamps_s,
            "sampled_at_s": extracted.sampled_at_s,
            "width": extracted.width,
            "height": extracted.height,
            "candidates": extracted.num_candidates,
        },
        "settings": settings.to_json(),
    }
    if record.span is not None:
        metadata["segment"] = {"start_s": record.span[0], "end_s": record.span[1]}
    if record.extra:
        metadata.update({k: v for k, v in record.extra.items() if k not in metadata})
    if extracted.partial:
        metadata["partial"] = True
    if extracted.warnings:
        metadata["warnings"] = extracted.warnings
    return metadata


def _file_name(path: str | None, videos_root: str) -> str | None:
    """Relative to ``--videos`` for local files; a URL (every file of a remote root) as it is."""
    if path is None or is_url(path):
        return path
    return os.path.relpath(path, os.path.realpath(videos_root))


def _failure(video: PlannedVideo, unit: int, error: str, kind: str) -> dict:
    return {
        "video_id": video.record.video_id,
        "key": video.key,
        "reference": video.record.reference,
        "path": video.record.path,
        "unit": unit,
        "error": error,
        "kind": kind,  # failure_kind of the reason: what the per-shard counts and the totals count
    }


def _needs_decoding(video: PlannedVideo) -> bool:
    """Only videos that exist and have a caption go to ffmpeg; the rest fail without work. A window of
    a --windows build (a collection to search) needs no caption."""
    return video.record.path is not None and (bool(video.record.captions) or "window" in video.record.extra)


def _unusable(video: PlannedVideo) -> VideoDecodeError:
    if video.record.path is None:
        return VideoDecodeError(video.record.reference, video.record.problem or "missing")
    return VideoDecodeError(video.record.reference, "annotation has no non-empty caption")


class _UnitWriter:
    """Writes one unit's samples, starting a new part when ``max_shard_bytes`` would be passed,
    and keeps each part's build stats (failures by kind, seconds of video, wall time)."""

    def __init__(self, store: Store, prefix: str, unit: int, max_bytes: int | None) -> None:
        self.store, self.prefix, self.unit, self.max_bytes = store, prefix, unit, max_bytes
        self.part = 0
        self.writer: AtomicShardWriter | None = None
        self.shards: list[ShardStats] = []
        self._pending = ShardStats("", 0, 0)  # stats not yet given to a closed part
        self.unit_stats = ShardStats("", 0, 0)

    def note(self, failure_kind: str | None = None, seconds_decoded: float = 0.0, wall_s: float = 0.0) -> None:
        for stats in (self._pending, self.unit_stats):
            if failure_kind is not None:
                stats.failures[failure_kind] = stats.failures.get(failure_kind, 0) + 1
            stats.seconds_decoded += seconds_decoded
            stats.build_seconds += wall_s

    def write(self, sample: dict) -> None:
        size = sum(len(v) for k, v in sample.items() if k != "__key__")
        if self.writer is not None and self.max_bytes and self.writer.keys and self.writer.bytes_written + size > self.max_bytes:
            self._close()
            self.part += 1
        if self.writer is None:
            self.writer = AtomicShardWriter(self.store, shard_name(self.prefix, self.unit, self.part))
        self.writer.write(sample)

    def _close(self) -> None:
        assert self.writer is not None
        self.writer.__exit__(None, None, None)
        pending = self._pending
        self.shards.append(
            ShardStats(
                self.writer.name,
                len(self.writer.keys),
                self.writer.final_bytes,
                failures=dict(sorted(pending.failures.items())),
                seconds_decoded=round(pending.seconds_decoded, 3),
                build_seconds=round(pending.build_seconds, 3),
            )
        )
        self._pending = ShardStats("", 0, 0)
        self.writer = None

    def finish(self) -> list[ShardStats]:
        if self.writer is not None:
            self._close()
        return self.shards

    def abort(self, error: BaseException) -> None:
        if self.writer is not None:
            self.writer.__exit__(type(error), error, error.__traceback__)
            self.writer = None


@dataclass
class PreparedBuild:
    """What every distributor starts from: the whole plan, this job's share and what is left of it."""

    units: list[list[PlannedVideo]]
    mine: list[int]  # this job's units (all of them unless --num-jobs splits the build)
    todo: list[int]  # of those, the ones without a unit record yet
    ignored_missing: int = 0  # annotations dropped by --ignore-missing (no file)
    missing: int = 0  # planned videos with no file (failures to come, without --ignore-missing)

    @property
    def total_videos(self) -> int:
        return sum(len(self.units[u]) for u in self.todo)

    def missing_counts(self) -> dict:
        """The ``BuildReport`` fields that say how many annotated videos had no file."""
        return {"ignored_missing": self.ignored_missing, "missing": self.missing, "videos_planned": sum(len(unit) for unit in self.units)}


def prepare_build(records: list[VideoRecord], videos_root: str, store: Store, settings: ExtractionSettings, options: BuildOptions,
                  write_plan: bool = True) -> PreparedBuild:  # fmt: skip
    """Plans the units, writes (or checks) ``plan.json`` and finds the units still to build.

    ``write_plan=False`` (a dry run) only checks an existing plan and deletes nothing.
    """
    if write_plan:
        store.ensure_root()
    expand = None
    if options.windows is not None:
        windows = options.windows

        def expand(resolved: list[VideoRecord]) -> list[VideoRecord]:
            uncut = [r.path for r in resolved if r.path is not None and r.span is None]
            return window_records(resolved, windows, known_durations(store, uncut, options.workers or os.cpu_count() or 1, write=write_plan))

    units, ignored = plan_units(records, videos_root, options.samples_per_shard, options.ignore_missing, expand)
    if not units:
        raise ValueError(f"none of the {len(records)} annotated videos exist under {videos_root}")
    document = build_plan_document(units, settings, options, ignored)
    if write_plan:
        write_or_check_plan(store, document)
    elif store.exists(PLAN_NAME):
        check_plan(store, document)
    mine = units_for_job(len(units), options.num_jobs, options.job_index)
    finished = completed_units(store)
    todo = [u for u in mine if u not in finished]
    if write_plan:
        store.remove_partials(unit_stems(options.prefix, todo))
    missing = sum(video.record.missing for unit in units for video in unit)
    return PreparedBuild(units, mine, todo, ignored, missing)


def unit_stems(prefix: str, units: list[int]) -> list[str]:
    """The file stems a unit writes (its shard parts and its record), for cleaning half-written ones."""
    return [os.path.splitext(name)[0] for u in units for name in (shard_name(prefix, u), unit_record_name(u))]


def decode_tasks(videos: list[PlannedVideo], settings: ExtractionSettings) -> list[DecodeTask]:
    """The ffmpeg work of some videos, in order (videos without a file or caption need none)."""
    return [(v.record.path, settings, v.record.span) for v in videos if _needs_decoding(v)]


VideoDone = Callable[[bool], None]  # called once per video of a unit: failed or not


def write_unit(unit: int, videos: list[PlannedVideo], decoded: Iterator[ExtractedVideo | VideoDecodeError], store: Store,
               settings: ExtractionSettings, options: BuildOptions, videos_root: str, on_video: VideoDone | None = None,
               node: dict | None = None) -> UnitRecord:  # fmt: skip
    """Writes one unit's shard(s) from its videos' decode results (in order), then its record.

    The one place that turns decoded videos into shards: the local pool and a Ray task both
    call it, so a unit's bytes cannot depend on where it was built. The record is written
    last: its presence means the unit's shards are complete and visible.
    """
    unit_started = time.perf_counter()
    record = UnitRecord(unit=unit, node=node or this_node())
    writer = _UnitWriter(store, options.prefix, unit, options.max_shard_bytes)
    splits: Counter[str] = Counter()
    try:
        for video in videos:
            started = time.perf_counter()
            result = next(decoded) if _needs_decoding(video) else _unusable(video)
            if isinstance(result, VideoDecodeError):
                kind = failure_kind(result.reason)
                error = result.reason if not result.stderr_tail else f"{result.reason}: {result.stderr_tail}"
                record.failures.append(_failure(video, unit, error, kind))
                writer.note(kind, wall_s=time.perf_counter() - started)
            else:
                metadata = _sample_metadata(video, result, videos_root, settings)
                writer.write(encode_sample(video.key, result.frames_jpeg, metadata, result.transcode_mp4))
                record.keys.append(video.key)
                record.captions += len(video.record.captions)
                splits[video.record.split or "unspecified"] += 1
                decoded_span = (result.decoded_s or 0.0) - (video.record.start_s or 0.0)
                writer.note(seconds_decoded=max(0.0, decoded_span), wall_s=time.perf_counter() - started)
            if on_video is not None:
                on_video(isinstance(result, VideoDecodeError))
        record.shards = writer.finish()
    except BaseException as error:
        writer.abort(error)
        raise
    writer.unit_stats.samples = len(record.keys)
    writer.unit_stats.bytes = sum(shard.bytes for shard in record.shards)
    record.stats = asdict(writer.unit_stats)
    del record.stats["name"]
    record.splits = dict(splits)
    record.wall_seconds = round(time.perf_counter() - unit_started, 3)
    write_unit_record(store, record)
    return record


def build_shards(
    records: list[VideoRecord],
    videos_root: str,
    store: Store,
    settings: ExtractionSettings,
    options: BuildOptions,
    prepared: PreparedBuild | None = None,
) -> BuildReport:
    """Builds this job's unfinished units with a local process pool; merges the manifest when it is the only job.

    ``prepared``: the units to build when they are not the plan's own (a retry round, pipeline/retry.py)."""
    prepared = prepared or prepare_build(records, videos_root, store, settings, options)
    units, todo = prepared.units, prepared.todo
    tasks = decode_tasks([v for u in todo for v in units[u]], settings)
    workers = options.workers or os.cpu_count() or 1
    samples_written = failures = 0
    # nothing left: no bar at all (an empty one reads as a stalled build)
    progress = tqdm(total=prepared.total_videos, unit="video", disable=not options.show_progress or not todo, smoothing=0.1)
    decoded = _decoded_stream(tasks, workers)

    def on_video(failed: bool) -> None:
        nonlocal failures
        failures += failed
        progress.update(1)
        progress.set_postfix(failures=failures, refresh=False)

    try:
        for unit in todo:
            record = write_unit(unit, units[unit], decoded, store, settings, options, videos_root, on_video)
            samples_written += len(record.keys)
    finally:
        progress.close()
        decoded.close()
    manifest = merge_manifest(store) if options.num_jobs == 1 else None
    return BuildReport(
        units_total=len(units),
        units_built=len(todo),
        units_skipped=len(prepared.mine) - len(todo),
        samples_written=samples_written,
        failures=failures,
        manifest=manifest,
        **prepared.missing_counts(),
    )
