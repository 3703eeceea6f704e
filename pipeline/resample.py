"""New shards from old ones without the source videos: re-sample the stored 3 fps transcodes.

A build with ``--keep-transcode`` stores each clip's 3 fps mp4 next to its frames. Going to
other ``--max-frames`` (64 for ActivityNet/DiDeMo), ``--sample-fps`` or ``--slice`` then
needs only the shards: each input shard becomes one output shard with the same keys,
captions and metadata, its frames chosen again from the transcode by the same rules (the
transcode's frame at each second *is* the source frame on screen then). The output is a
normal build (plan, unit records, manifest), so an interrupted run resumes and readers see
the new settings.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace

from pipeline.extract import ExtractionSettings, VideoDecodeError, extract_video
from pipeline.sampling import SlicePosition
from shards.manifest import (
    ShardStats,
    UnitRecord,
    completed_units,
    merge_manifest,
    read_manifest,
    shard_name,
    this_node,
    videos_digest,
    write_or_check_plan,
    write_unit_record,
)
from shards.reader import iter_samples
from shards.sample_format import FORMAT_VERSION, encode_sample, frame_members, sample_metadata
from shards.storage import Store
from shards.writer import AtomicShardWriter


class ResampleError(ValueError):
    """The input shards cannot be re-sampled; names the shard or sample."""


def settings_from_manifest(manifest: dict, **changes) -> ExtractionSettings:
    stored = dict(manifest["settings"])
    stored["slice_position"] = SlicePosition(stored["slice_position"])
    return replace(ExtractionSettings(**stored), **changes)


def resample(
    source: str, out: str, max_frames: int | None = None, sample_fps: float | None = None, slice_position: SlicePosition | None = None
) -> dict:
    """Re-samples every shard of the build at ``source`` into ``out``; returns the manifest."""
    source_store, store = Store(source), Store(out)
    manifest = read_manifest(source_store)
    if not manifest["settings"].get("keep_transcode"):
        raise ResampleError(f"{source}: built without --keep-transcode, so its samples hold no transcode to re-sample")
    changes = {
        k: v for k, v in (("max_frames", max_frames), ("sample_fps", sample_fps), ("slice_position", slice_position)) if v is not None
    }
    settings = settings_from_manifest(manifest, **changes)
    store.ensure_root()
    shards = manifest["shards"]
    plan = {
        "format": FORMAT_VERSION,
        "prefix": manifest["prefix"],
        "samples_per_shard": manifest["samples_per_shard"],
        "max_shard_bytes": None,
        "settings": settings.to_json(),
        "num_units": len(shards),
        "num_videos": manifest["num_samples"],
        "ignored_missing": 0,
        "videos_digest": videos_digest([(source, manifest["videos_digest"])]),
        "resampled_from": source,
    }
    write_or_check_plan(store, plan)
    done = completed_units(store)
    for unit, shard in enumerate(shards):
        if unit not in done:
            _resample_shard(source_store.url_of(shard["name"]), store, unit, manifest["prefix"], settings)
    return merge_manifest(store)


def _resample_shard(url: str, store: Store, unit: int, prefix: str, settings: ExtractionSettings) -> None:
    record = UnitRecord(unit=unit, node=this_node())
    splits: dict[str, int] = {}
    seconds = 0.0
    with AtomicShardWriter(store, shard_name(prefix, unit)) as writer, tempfile.TemporaryDirectory(prefix="resample-") as scratch:
        for sample in iter_samples([url]):
            key = sample["__key__"]
            if "mp4" not in sample:
                raise ResampleError(f"{url}: sample {key!r} has no transcode (mp4) member")
            metadata = sample_metadata(sample)
            local = os.path.join(scratch, "transcode.mp4")
            with open(local, "wb") as handle:
                handle.write(sample["mp4"])  # one clip on disk at a time
            try:
                video = extract_video(local, settings)
            except VideoDecodeError as error:
                record.failures.append({"key": key, "video_id": metadata.get("video_id"), "unit": unit, "error": f"{url}: {error.reason}"})
                continue
            offset = (metadata.get("segment") or {}).get("start_s") or 0.0  # a segment's transcode starts at its start
            metadata["frames"] = {
                "count": len(video.frames_jpeg),
                "timestamps_s": [round(offset + t, 6) for t in video.timestamps_s],
                "sampled_at_s": [round(offset + t, 6) for t in video.sampled_at_s],
                "width": video.width,
                "height": video.height,
                "candidates": video.num_candidates,
            }
            metadata["settings"] = settings.to_json()
            metadata["resampled_from"] = {"shard": url, "frames": len(frame_members(sample))}
            writer.write(encode_sample(key, video.frames_jpeg, metadata, sample["mp4"]))
            record.keys.append(key)
            record.captions += len(metadata.get("captions", []))
            split = metadata.get("split") or "unspecified"
            splits[split] = splits.get(split, 0) + 1
            seconds += video.decoded_s or 0.0
    record.shards = [ShardStats(writer.name, len(writer.keys), writer.final_bytes, seconds_decoded=round(seconds, 3))]
    record.splits = splits
    record.stats = {
        "samples": len(record.keys),
        "bytes": writer.final_bytes,
        "failures": {"decode": len(record.failures)} if record.failures else {},
        "seconds_decoded": round(seconds, 3),
        "build_seconds": 0.0,
    }
    write_unit_record(store, record)
