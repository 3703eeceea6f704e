"""Encode a video collection's shards once into a search index (search/index_format.py), incrementally.

Each run indexes only the shards no committed part covers yet, so adding shards appends and
a killed or preempted run resumes where its last committed part ended. Under torchrun every
rank encodes its own share of the new shards (rank, rank + world, ...) into its own parts: no
feature crosses ranks, so a million videos need no gather. Rank 0 then lists every complete
part in ``index.json`` and, from ``ANN_MIN_VIDEOS`` on, rebuilds the approximate index.

A shard is indexed whole or not at all: one that fails to read part-way has its rows dropped
and is named in the part's ``failed_shards``, and the next run retries it. A sample that is cut
off or cannot be decoded is named in its shard's ``skipped`` and never indexed as black frames.
Videos without captions are indexed: a collection to search need not be annotated.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from model import backbone
from model.clip_decode import decode_clip
from model.features import VideoFeatures
from model.frame_rule import build_settings, frame_rule_for
from model.trained_model import TrainedModel, inference_autocast, model_fingerprint
from runtime.distributed import DistInfo, barrier, is_distributed
from search.ann import DEFAULT_NPROBE, build_ann
from search.index_format import (
    ANN_FILE,
    INDEX_FILE,
    INDEX_FORMAT,
    IndexFormatError,
    PartWriter,
    VideoIndex,
    arrays_for,
    check_format,
    committed_parts,
    part_records,
    read_json,
    remove_staging_leftovers,
)
from search.options import ANN_MIN_VIDEOS, IndexSettings
from shards.reader import ReadErrors, iter_samples, shard_urls
from shards.sample_format import complete_metadata
from shards.storage import Store
from shards.thumbnails import frame_strip_jpeg

logger = logging.getLogger(__name__)
_PART_NAME = re.compile(r"^run(\d+)-rank(\d+)-(\d+)$")
# what must match for new rows to be searched together with the old ones
IDENTITY_FIELDS = ("model_sha256", "max_frames", "max_words", "image_size", "arrays", "dim")
# why a sample of a readable shard is not indexed (each named by key in its part.json); a key the
# index already holds (the same shards again from another folder, say) would only repeat results
SKIP_REASONS = ("incomplete", "undecodable", "duplicate_key")


def _feature_arrays(model: torch.nn.Module, video: VideoFeatures, mask: torch.Tensor, names: list[str]) -> dict[str, np.ndarray]:
    """The rows of each stored array for one encoded batch (float32 here; stored as float16)."""
    values = {
        "video": lambda: model.coarse_video_vector(video).float(),
        "frames": lambda: video.frames.float(),
        "frame_mask": lambda: mask,
        "clip_frames": lambda: video.clip_frames.float(),
        "patches": lambda: video.patches.float(),
    }
    return {name: values[name]().cpu().numpy() for name in names}


@torch.no_grad()
def _row_shapes(model: torch.nn.Module, names: list[str], max_frames: int, image_size: int, device: torch.device) -> dict[str, tuple[int, ...]]:
    """Each array's row shape, from one blank clip (an empty part still needs them)."""
    frames = torch.zeros(1, max_frames, 3, image_size, image_size, dtype=torch.uint8, device=device)
    mask = torch.ones(1, max_frames, dtype=torch.bool, device=device)
    with inference_autocast(device):
        video = model.encode_video(frames, mask)
    return {name: tuple(array.shape[1:]) for name, array in _feature_arrays(model, video, mask, names).items()}


def describe_index(trained: TrainedModel, fingerprint: str, image_size: int, arrays: list[str], row_shapes: dict, settings: IndexSettings) -> dict:
    """index.json without its parts: the model that made the vectors and what each row holds."""
    config = trained.config
    checkpoint = trained.checkpoint if "://" in trained.checkpoint else os.path.abspath(trained.checkpoint)  # search runs from anywhere
    return {
        "format": INDEX_FORMAT,
        "checkpoint": checkpoint,
        "checkpoint_format": trained.checkpoint_format,
        "step": trained.step,
        "model_sha256": fingerprint,
        "model": {"name": config.model, **config.architecture(), "peft": config.peft},
        "max_frames": config.max_frames,
        "max_words": config.max_words,
        "image_size": image_size,
        "dim": int(row_shapes["video"][0]),
        "arrays": arrays,
        "row_shapes": {name: list(shape) for name, shape in row_shapes.items()},
        "thumbnail": {"frames": settings.thumbnail_frames, "height": settings.thumbnail_height},
    }


def _check_same_model(existing: dict, wanted: dict, url: str) -> None:
    for field in IDENTITY_FIELDS:
        if existing.get(field) != wanted[field]:
            raise IndexFormatError(
                f"{url}: the index was made with {field} {existing.get(field)!r} (checkpoint {existing.get('checkpoint')}), "
                f"this run has {wanted[field]!r} (checkpoint {wanted['checkpoint']}); vectors of two models cannot be searched "
                "together: index into a new folder"
            )


def _share(items: list, info: DistInfo) -> list:
    return items[info.rank :: info.world_size]


def _gather(value: object, info: DistInfo) -> list:
    if not is_distributed():
        return [value]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, value)
    return gathered


class ShareIndexer:
    """One worker's loop (a rank, or a Ray task): its shards, batch by batch, into parts committed every
    ``part_videos`` rows, named ``runR-rankW-S`` (W the worker's slot, S from ``first_part`` on)."""

    def __init__(self, trained: TrainedModel, store: Store, description: dict, run: int, info: DistInfo, settings: IndexSettings,
                 shards_location: str, known_keys: set[str], first_part: int = 0) -> None:  # fmt: skip
        self.model, self.store, self.info, self.settings = trained.model, store, info, settings
        self.description, self.run = description, run
        self.rule = frame_rule_for(shards_location, description["max_frames"], description["image_size"])
        self.row_shapes = {name: tuple(shape) for name, shape in description["row_shapes"].items()}
        self.part: PartWriter | None = None
        self.parts_written = first_part
        self.stats = {"rows": 0, "shards": 0, "failed_shards": [], "skipped": dict.fromkeys(SKIP_REASONS, 0)}
        self.known_keys = known_keys
        self.segment_rows = 0  # of the open part: rows that are a segment (a window) of a longer video

    def _open_part(self) -> PartWriter:
        if self.part is None:
            name = f"run{self.run:05d}-rank{self.info.rank:04d}-{self.parts_written:05d}"
            self.part = PartWriter(self.store, name, self.description["arrays"], self.row_shapes)
        return self.part

    def _commit(self) -> None:
        if self.part is None:
            return
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        part = self.part.commit({"committed": now, "rank": self.info.rank, "world_size": self.info.world_size,
                                 "model_sha256": self.description["model_sha256"], "segment_rows": self.segment_rows})  # fmt: skip
        self.segment_rows = 0
        logger.info("committed part %s: %d videos from %d shard(s)", part["name"], part["rows"], len(part["shards"]))
        self.part, self.parts_written = None, self.parts_written + 1

    @torch.no_grad()
    def _flush(self, pending: list[tuple[bytes, dict, torch.Tensor, torch.Tensor]]) -> None:
        """Encode the pending clips (thumbnail, record, frames, mask) and append them to the open part."""
        if not pending:
            return
        device = self.info.device
        frames = torch.stack([p[2] for p in pending]).to(device, non_blocking=True)
        mask = torch.stack([p[3] for p in pending]).to(device)
        with inference_autocast(device):
            video = self.model.encode_video(frames, mask)
        arrays = _feature_arrays(self.model, video, mask, self.description["arrays"])
        self._open_part().add(arrays, [p[1] for p in pending], [p[0] for p in pending])
        pending.clear()

    def index_shard(self, url: str) -> None:
        part = self._open_part()
        part.start_shard()
        errors, pending = ReadErrors(), []
        skipped: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}
        shard_keys: set[str] = set()
        segments = 0
        for sample in iter_samples([url], errors.handler, self.settings.read_policy):
            metadata = complete_metadata(sample)
            if metadata is None:
                skipped["incomplete"].append(sample.get("__key__", "?"))
                continue
            if sample["__key__"] in self.known_keys or sample["__key__"] in shard_keys:
                skipped["duplicate_key"].append(sample["__key__"])
                continue
            shard_keys.add(sample["__key__"])
            try:
                frames, mask = decode_clip(sample, self.description["max_frames"], self.description["image_size"], self.rule)
                thumbnail = frame_strip_jpeg(sample, self.settings.thumbnail_frames, self.settings.thumbnail_height)
            except (RuntimeError, ValueError, OSError):  # OSError: PIL's, for a frame it cannot read
                skipped["undecodable"].append(sample["__key__"])
                continue
            pending.append((thumbnail, _row_record(sample, metadata, url, int(mask.sum())), frames, mask))
            segments += "segment" in metadata
            if len(pending) == self.settings.batch_size:
                self._flush(pending)
        self._flush(pending)
        if errors.errors:
            reason = errors.errors[0][1]
            logger.warning("shard %s failed part-way (%s): its rows are dropped and the next run retries it", url, reason)
            part.drop_shard(url, reason)
            self.stats["failed_shards"].append({"url": url, "reason": reason})
            return
        part.finish_shard(url, skipped)
        self.segment_rows += segments
        self.known_keys |= shard_keys
        self.stats["shards"] += 1
        self.stats["rows"] += part.shards[-1]["rows"]
        for name, keys in skipped.items():
            self.stats["skipped"][name] += len(keys)
        if part.rows >= self.settings.part_videos:
            self._commit()

    def run_all(self, urls: list[str]) -> dict:
        try:
            for url in urls:
                self.index_shard(url)
            if self.part is not None and (self.part.shards or self.part.failed_shards):
                self._commit()
        except BaseException:
            if self.part is not None:
                self.part.abandon()
            raise
        return self.stats


def _duration(source: dict) -> float | None:
    """The source's duration: its header's, or where its decoded frames ended when the header gave none (a GIF)."""
    return source.get("duration_s") if source.get("duration_s") is not None else source.get("decoded_s")


def _row_record(sample: dict, metadata: dict, url: str, frames: int) -> dict:
    """What a search result shows and links to (rows.bin): enough to find the sample again."""
    record = {"key": sample["__key__"], "shard": url, "video_id": metadata.get("video_id"), "captions": metadata.get("captions") or [],
              "frames": frames, "source_file": (metadata.get("source") or {}).get("file"),
              "duration_s": _duration(metadata.get("source") or {})}  # fmt: skip
    if "segment" in metadata:
        record["segment"] = metadata["segment"]
    if "source_video" in metadata:  # a --windows build's window: the video it was cut from
        record["source_video"] = metadata["source_video"]
    return record


def _indexed_keys(store: Store, parts: dict[str, dict]) -> set[str]:
    """Keys of every row already in the index (ranks of one run cannot see each other's new keys)."""
    return {record["key"] for name in parts for record in part_records(store, name)}


def part_name_fields(name: str) -> tuple[int, int, int] | None:
    """(run, worker slot, sequence) of a part written by this indexer; None for other names."""
    match = _PART_NAME.match(name)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3))) if match else None


def _run_number(parts: dict[str, dict]) -> int:
    runs = [int(m.group(1)) for name in parts if (m := _PART_NAME.match(name))]
    return max(runs, default=0) + 1


@dataclass
class IndexJob:
    """What one indexing run does, decided once (by rank 0, or a Ray driver): which model wrote the
    vectors, which run number its parts carry, which shards are new, which keys are already held."""

    store: Store
    description: dict
    run: int
    all_urls: list[str]
    new_urls: list[str]
    known_keys: set[str]


def describe_model(trained: TrainedModel, settings: IndexSettings, device: torch.device) -> dict:
    """index.json's description of this model's rows (its fingerprint, arrays and row shapes)."""
    model = trained.model.to(device).eval()
    image_size = backbone.input_size(model.clip)
    arrays = arrays_for(model.similarity.has_fine_stage, model.similarity.reads_patches)
    return describe_index(trained, model_fingerprint(model), image_size, arrays,
                          _row_shapes(model, arrays, trained.config.max_frames, image_size, device), settings)  # fmt: skip


def check_existing_index(store: Store, description: dict, settings: IndexSettings, shards_location: str) -> None:
    """An index being appended to must hold this model's vectors; its thumbnail look is kept. The
    build's frame settings are recorded (``build_settings``: what a query file is decoded with,
    search/media_query.py): the first build's, or, for an index made before they were recorded, these shards'."""
    existing = read_json(store, INDEX_FILE) if store.exists(INDEX_FILE) else None
    description["build_settings"] = (existing or {}).get("build_settings") or build_settings(shards_location)
    if existing is None:
        return
    check_format(existing, store)
    _check_same_model(existing, description, store.url)
    description["thumbnail"] = existing["thumbnail"]  # one look for the whole index
    settings.thumbnail_frames, settings.thumbnail_height = existing["thumbnail"]["frames"], existing["thumbnail"]["height"]


def clean_leftovers(store: Store) -> None:
    """Delete half-written parts of killed runs (only while no other writer runs)."""
    store.ensure_root()
    removed = remove_staging_leftovers(store)
    if removed:
        logger.info("removed %d half-written part(s) of an earlier, killed run", removed)


def pending_work(store: Store, description: dict, shards_location: str) -> IndexJob:
    """The shards no committed part covers yet, and the keys the index already holds."""
    before = committed_parts(store)
    for name, part in before.items():  # parts of a killed run are adopted only if the same model wrote them
        if part.get("model_sha256") != description["model_sha256"]:
            raise IndexFormatError(f"{store.url_of('parts/' + name)}: written by another model ({part.get('model_sha256', '?')[:12]}...)")
    done = {shard["url"] for part in before.values() for shard in part["shards"]}
    all_urls = shard_urls(shards_location)
    new_urls = [url for url in all_urls if url not in done]
    return IndexJob(store, description, _run_number(before), all_urls, new_urls, _indexed_keys(store, before))


def summarize(job: IndexJob, everyone: list[dict]) -> dict:
    """The run's summary from every worker's stats (ranks, or Ray tasks)."""
    return {
        "index": job.store.url,
        "new_videos": sum(s["rows"] for s in everyone),
        "new_shards": sum(s["shards"] for s in everyone),
        "already_indexed_shards": len(job.all_urls) - len(job.new_urls),
        "failed_shards": [f for s in everyone for f in s["failed_shards"]],
        "skipped": {name: sum(s["skipped"][name] for s in everyone) for name in SKIP_REASONS},
    }


def index_shards(trained: TrainedModel, shards_location: str, out: str, info: DistInfo, settings: IndexSettings | None = None) -> dict:
    """Index the shards at ``shards_location`` not yet in the index at ``out``; returns a summary (every rank)."""
    settings = settings or IndexSettings()
    store = Store(out)
    description = describe_model(trained, settings, info.device)
    check_existing_index(store, description, settings, shards_location)
    if info.is_main:
        clean_leftovers(store)
    barrier()
    job = pending_work(store, description, shards_location)
    logger.info("%d of %d shard(s) already indexed; indexing %d on %d rank(s)", len(job.all_urls) - len(job.new_urls), len(job.all_urls),
                len(job.new_urls), info.world_size)  # fmt: skip
    indexer = ShareIndexer(trained, store, description, job.run, info, settings, shards_location, job.known_keys)
    stats = indexer.run_all(_share(job.new_urls, info))
    everyone = _gather(stats, info)
    barrier()
    summary = summarize(job, everyone)
    if info.is_main:
        summary.update(write_index_manifest(store, description, settings))
    barrier()
    if not info.is_main:
        summary["num_videos"] = json.loads(store.read_bytes(INDEX_FILE))["num_videos"]
    return summary


def write_index_manifest(store: Store, description: dict, settings: IndexSettings) -> dict:
    """index.json listing every complete part in name order (run, rank, sequence), then the ANN file."""
    parts = committed_parts(store)
    names = sorted(parts)
    total = sum(parts[name]["rows"] for name in names)
    manifest = {**description, "parts": names, "num_videos": total, "ann": None,
                "segment_rows": sum(parts[name].get("segment_rows", 0) for name in names),  # search groups them by source video
                "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}  # fmt: skip
    store.remove(ANN_FILE)  # a stale ANN file must never answer for rows it does not hold
    store.write_bytes(INDEX_FILE, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
    if settings.ann == "always" or (settings.ann == "auto" and total >= ANN_MIN_VIDEOS):
        store.write_bytes(ANN_FILE, build_ann(VideoIndex(store.url).video_vectors()))
        manifest["ann"] = {"file": ANN_FILE, "rows": total, "kind": "faiss IVF, fp16 vectors, inner product", "nprobe": DEFAULT_NPROBE}
        store.write_bytes(INDEX_FILE, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
    return {"num_videos": total, "parts": len(names), "ann": manifest["ann"] is not None}
