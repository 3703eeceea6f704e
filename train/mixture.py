"""Training on a mixture of datasets: ``--train-shards "A::B::C" --train-weights 1::1::3`` (open_clip's ``::``).

Each source is a build of its own (a folder or any fsspec URL with its manifest, or a brace pattern of
tars). Every sample of a rank's stream is drawn from source i with probability weight_i / sum(weights),
and taken from that source's own stream (its own shard order and shuffle), so the mixture's proportions
hold however the sources' shards differ in size, on every rank. An epoch is as many samples as the sources
hold together (their manifests' counts). A resumed run rebuilds every source's stream and the mixing draws
from the seed and the step it resumes at, as a single-source stream is rebuilt (train/data.py); the run
log reports the samples drawn from each source. A source that does not exist or holds no samples is
refused before any step, naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from shards.manifest import MANIFEST_NAME, read_manifest
from shards.reader import ShardReadError, shard_urls
from shards.storage import Store

SEPARATOR = "::"


class MixtureError(ValueError):
    """A mixture that cannot be trained on; names the source."""


@dataclass(frozen=True)
class Source:
    location: str
    weight: float
    urls: tuple[str, ...]
    samples: int | None  # the manifest's count (None for a bare pattern of tars)
    captions: int | None


def split_sources(train_shards: str) -> list[str]:
    return [part.strip() for part in train_shards.split(SEPARATOR)]


def parse_weights(weights: str | None, count: int) -> list[float]:
    if not weights:
        return [1.0] * count
    parts = weights.split(SEPARATOR)
    if len(parts) != count:
        raise MixtureError(f"--train-weights gives {len(parts)} weights for {count} sources in --train-shards")
    try:
        values = [float(part) for part in parts]
    except ValueError as error:
        raise MixtureError(f"--train-weights {weights!r}: each weight must be a number ({error})") from error
    if any(value <= 0 for value in values):
        raise MixtureError(f"--train-weights {weights!r}: every weight must be above 0")
    return values


def resolve_sources(train_shards: str, weights: str | None) -> list[Source]:
    """Every source checked now (exists, holds shards and samples), before anything heavy starts."""
    locations = split_sources(train_shards)
    if any(not location for location in locations):
        raise MixtureError(f"--train-shards {train_shards!r}: an empty source between '{SEPARATOR}'")
    values = parse_weights(weights, len(locations))
    sources = []
    for location, weight in zip(locations, values, strict=True):
        try:
            urls = tuple(shard_urls(location))
        except (ShardReadError, FileNotFoundError, OSError) as error:
            raise MixtureError(f"training source {location}: {error}") from error
        samples = captions = None
        if not (location.endswith(".tar") or "{" in location):
            store = Store(location.rstrip("/"))
            if store.exists(MANIFEST_NAME):
                manifest = read_manifest(store)
                samples, captions = manifest.get("num_samples"), manifest.get("num_captions")
                if samples == 0:
                    raise MixtureError(f"training source {location}: its manifest counts no samples (every video failed? see its failures.jsonl)")
        sources.append(Source(location, weight, urls, samples, captions))
    return sources


def epoch_items(sources: list[Source], caption_mode: str) -> int | None:
    """Samples (or captions, with --caption-mode expand) the sources hold together; None when one has no manifest."""
    counts = [s.captions if caption_mode == "expand" else s.samples for s in sources]
    return None if any(count is None for count in counts) else sum(counts)


def _normalised(location: str) -> str:
    location = location.strip().rstrip("/")
    return location if "://" in location else os.path.realpath(location)


def validation_is_held_out(val_shards: str | None, train_locations: list[str]) -> bool | None:
    """Whether the validation shards are none of the training sources (None without validation). The same
    shards for both measure how well the model fits them, not held-out retrieval: the run warns and the card says so."""
    if not val_shards:
        return None
    return _normalised(val_shards) not in {_normalised(location) for location in train_locations}
