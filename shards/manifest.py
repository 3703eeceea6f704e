"""Build bookkeeping: the plan, per-unit completion records, and the final manifest.

A build splits the ordered video list into *units* of ``samples_per_shard`` videos. Unit
``u`` always holds the same videos, so any job on any machine can build it, and a rerun can
tell finished units from unfinished ones without coordination:

- ``_build/plan.json``: settings, unit count and a digest of the video list. A rerun with
  other settings or annotations into the same folder is refused instead of mixing shards.
- ``_build/units/NNNNNN.json``: written after a unit's shard(s) are visible; its presence
  is what "done" means. Holds shard names, sample counts, bytes, keys and failures.
- ``_build/retries/NNN.json``: a retry round (``pipeline build --retry-failures``): the keys of the
  videos that had failed when it started, built into new units numbered after the plan's (and
  earlier rounds'), so no existing shard is touched. A video's latest attempt is what counts: a
  failure that a later unit retried is replaced by that unit's sample or failure.
- ``failures.jsonl`` then ``manifest.json``: joined from all unit records by
  ``merge_manifest``; the manifest is written last, so its presence marks a finished build.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections import Counter
from dataclasses import asdict, dataclass, field

from shards.sample_format import FORMAT_VERSION
from shards.storage import Store

PLAN_NAME = "_build/plan.json"
UNITS_DIR = "_build/units"
RETRIES_DIR = "_build/retries"
MANIFEST_NAME = "manifest.json"
FAILURES_NAME = "failures.jsonl"


class BuildStateError(RuntimeError):
    """The output folder's build records disagree with this run or with each other."""


def shard_name(prefix: str, unit: int, part: int = 0) -> str:
    """``PREFIX-NNNNNN.tar``; a unit split by ``--max-shard-bytes`` adds ``-K`` parts."""
    return f"{prefix}-{unit:06d}.tar" if part == 0 else f"{prefix}-{unit:06d}-{part}.tar"


def this_node() -> dict:
    """Where a unit is built, for the manifest's per-node figures (a Ray task adds its node id)."""
    return {"host": socket.gethostname()}


def unit_record_name(unit: int) -> str:
    return f"{UNITS_DIR}/{unit:06d}.json"


@dataclass
class ShardStats:
    """One shard's contents and what building it took (the manifest lists one per shard)."""

    name: str
    samples: int
    bytes: int
    failures: dict[str, int] = field(default_factory=dict)  # by kind: missing, truncated, decode, network...
    seconds_decoded: float = 0.0  # of video, summed over its samples
    build_seconds: float = 0.0  # wall-clock time this job spent on the shard's videos

    @property
    def videos_per_s(self) -> float | None:
        videos = self.samples + sum(self.failures.values())
        return round(videos / self.build_seconds, 3) if self.build_seconds > 0 else None


TIMING_FIELDS = ("build_seconds", "videos_per_s")
# where and how fast units were built: differs between a local pool, a Slurm split and a Ray cluster
RUN_FIELDS = ("nodes",)


def without_timing(manifest: dict) -> dict:
    """The manifest minus its wall-clock and per-node fields: what a rerun, another worker count,
    a cluster split or a Ray cluster of the same build reproduces exactly (the shards are
    byte-identical)."""
    strip = lambda stats: {k: v for k, v in stats.items() if k not in TIMING_FIELDS}  # noqa: E731
    kept = {k: v for k, v in manifest.items() if k not in RUN_FIELDS}
    return kept | {"shards": [strip(s) for s in manifest["shards"]], "totals": strip(manifest.get("totals", {}))}


def build_totals(shards: list[ShardStats]) -> dict:
    """The per-shard stats summed over a build (printed at its end, kept in the manifest)."""
    failures: Counter[str] = Counter()
    for shard in shards:
        failures.update(shard.failures)
    seconds = sum(shard.build_seconds for shard in shards)
    videos = sum(shard.samples for shard in shards) + sum(failures.values())
    return {
        "samples": sum(shard.samples for shard in shards),
        "failures": dict(sorted(failures.items())),
        "seconds_decoded": round(sum(shard.seconds_decoded for shard in shards), 3),
        "bytes": sum(shard.bytes for shard in shards),
        "build_seconds": round(seconds, 3),
        "videos_per_s": round(videos / seconds, 3) if seconds > 0 else None,
    }


@dataclass
class UnitRecord:
    unit: int
    shards: list[ShardStats] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    captions: int = 0
    stats: dict = field(default_factory=dict)  # the unit's ShardStats fields, failures of videos without a shard included
    node: dict = field(default_factory=dict)  # where it was built: host (and ip, ray_node_id on a Ray cluster)
    wall_seconds: float = 0.0  # from the unit's first video to its record

    @classmethod
    def from_json(cls, data: dict) -> UnitRecord:
        record = cls(**{**data, "shards": []})
        record.shards = [ShardStats(**shard) for shard in data["shards"]]
        return record


def videos_digest(entries: list[tuple]) -> str:
    """Digest of (key, reference, captions, split[, segment]) in order: what decides shard contents."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(json.dumps(entry, ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def check_plan(store: Store, plan: dict) -> None:
    """An existing plan must be this one: a rerun with other settings or annotations is refused."""
    existing = json.loads(store.read_bytes(PLAN_NAME))
    if existing != plan:
        changed = sorted(k for k in set(existing) | set(plan) if existing.get(k) != plan.get(k))
        raise BuildStateError(
            f"{store.url_of(PLAN_NAME)}: the output already holds a build with different "
            f"{', '.join(changed)}; build into a new --out or delete the old one"
        )


def write_or_check_plan(store: Store, plan: dict) -> None:
    """First run writes the plan; reruns (and the other cluster jobs) must match it."""
    if store.exists(PLAN_NAME):
        check_plan(store, plan)
        return
    store.write_bytes(PLAN_NAME, json.dumps(plan, indent=1, sort_keys=True).encode("utf-8"))


def read_plan(store: Store) -> dict:
    if not store.exists(PLAN_NAME):
        raise BuildStateError(f"{store.url_of(PLAN_NAME)}: no build plan; is this a shard output folder?")
    return json.loads(store.read_bytes(PLAN_NAME))


def completed_units(store: Store) -> set[int]:
    return {int(name.split(".")[0]) for name in store.listdir(UNITS_DIR) if name.endswith(".json")}


def write_unit_record(store: Store, record: UnitRecord) -> None:
    store.write_bytes(unit_record_name(record.unit), json.dumps(asdict(record), sort_keys=True).encode("utf-8"))


def read_unit_record(store: Store, unit: int) -> UnitRecord:
    return UnitRecord.from_json(json.loads(store.read_bytes(unit_record_name(unit))))


def retry_round_name(number: int) -> str:
    return f"{RETRIES_DIR}/{number:03d}.json"


def read_retry_rounds(store: Store) -> list[dict]:
    """The build's retry rounds in order (none for a build never retried)."""
    names = sorted(name for name in store.listdir(RETRIES_DIR) if name.endswith(".json"))
    return [json.loads(store.read_bytes(f"{RETRIES_DIR}/{name}")) for name in names]


def num_units_built_for(plan: dict, rounds: list[dict]) -> int:
    """Units of the plan plus those of every retry round (a round's units follow the ones before)."""
    return plan["num_units"] + sum(r["num_units"] for r in rounds)


def failure_key(failure: dict) -> str:
    """The sample key a failure would have had (every build writes it; the video id for hand-made records)."""
    return failure.get("key") or failure["video_id"]


def latest_attempts(records: list[UnitRecord]) -> tuple[dict[str, dict], set[str]]:
    """Each video's outcome as its latest unit says (records in unit order): the failures still standing
    by key, and the keys written as samples. A video retried by a later unit loses its earlier failure."""
    failures: dict[str, dict] = {}
    written: set[str] = set()
    for record in records:
        for failure in record.failures:
            key = failure_key(failure)
            failures.pop(key, None)  # a newer failure goes last, in the order of its attempt
            failures[key] = failure
        for key in record.keys:
            failures.pop(key, None)
            written.add(key)
    return failures, written


def merge_manifest(store: Store) -> dict:
    """Joins every unit record into ``failures.jsonl`` and ``manifest.json``.

    Refuses while any unit is missing (naming them), so a manifest always describes a
    complete build; rerun the missing jobs, then merge again.
    """
    plan = read_plan(store)
    rounds = read_retry_rounds(store)
    num_units = num_units_built_for(plan, rounds)
    done = completed_units(store)
    missing = [u for u in range(num_units) if u not in done]
    if missing:
        shown = ", ".join(str(u) for u in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise BuildStateError(
            f"{store.url}: {len(missing)} of {num_units} units not built yet ({shown}); "
            "rerun the build job(s) that own them, then merge again"
        )
    shards: list[dict] = []
    failures: list[dict] = []
    splits: Counter[str] = Counter()
    seen_keys: set[str] = set()
    num_captions = 0
    unit_stats: list[ShardStats] = []
    nodes: dict[tuple, dict] = {}
    records = [read_unit_record(store, unit) for unit in range(num_units)]
    standing, _ = latest_attempts(records)
    for record in records:
        unit = record.unit
        _add_node_figures(nodes, record)
        duplicated = seen_keys.intersection(record.keys)
        if duplicated:
            raise BuildStateError(f"{store.url}: unit {unit} repeats keys {sorted(duplicated)[:5]}")
        seen_keys.update(record.keys)
        shards.extend(asdict(shard) | {"videos_per_s": shard.videos_per_s} for shard in record.shards)
        failures.extend(f for f in record.failures if standing.get(failure_key(f)) is f)  # retried ones: their latest attempt only
        splits.update(record.splits)
        num_captions += record.captions
        if record.stats:
            unit_stats.append(ShardStats(**{k: v for k, v in record.stats.items() if k in ShardStats.__dataclass_fields__} | {"name": ""}))
        else:  # a unit record from before per-shard stats: its shards say what is known
            unit_stats.extend(record.shards)
    failures_text = "".join(json.dumps(f, ensure_ascii=False, sort_keys=True) + "\n" for f in failures)
    store.write_bytes(FAILURES_NAME, failures_text.encode("utf-8"))
    manifest = {
        "format": FORMAT_VERSION,
        "prefix": plan["prefix"],
        "settings": plan["settings"],
        "samples_per_shard": plan["samples_per_shard"],
        "num_videos": plan["num_videos"],
        "ignored_missing": plan.get("ignored_missing", 0),
        "num_samples": len(seen_keys),
        "num_captions": num_captions,
        "num_failures": len(failures),
        "splits": dict(sorted(splits.items())),
        "videos_digest": plan["videos_digest"],
        "shards": shards,
        "totals": build_totals(unit_stats),
        "nodes": [nodes[key] | {"videos_per_s": _rate(nodes[key])} for key in sorted(nodes)],
    }
    if plan.get("holdout"):  # one part of a --val-fraction split: the rule, the part and its videos
        manifest["holdout"] = plan["holdout"]
    if rounds:
        manifest["retries"] = _retry_figures(rounds, records, plan["num_units"])
        # what stands now, by kind (the per-shard figures keep what happened while each shard was built)
        manifest["totals"]["failures"] = dict(sorted(Counter(kind_of(f) for f in failures).items()))
    store.write_bytes(MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
    return manifest


def _retry_figures(rounds: list[dict], records: list[UnitRecord], first_retry_unit: int) -> list[dict]:
    """Per round: videos retried, and how many of them became samples in that round."""
    figures, start = [], first_retry_unit
    for retry in rounds:
        units = records[start : start + retry["num_units"]]
        recovered = sum(len(record.keys) for record in units)
        figures.append({"round": retry["round"], "videos": len(retry["keys"]), "recovered": recovered, "units": [start, start + retry["num_units"] - 1],
                        "started": retry.get("started")})  # fmt: skip
        start += retry["num_units"]
    return figures


def failure_kind(reason: str) -> str:
    """A short class for a failure, for the per-shard counts (the full reason is in failures.jsonl)."""
    text = reason.lower()
    for kind, marks in (
        ("ambiguous", ("matches ",)),
        ("escapes", ("escapes the videos folder",)),
        ("no_caption", ("no non-empty caption",)),
        ("missing", ("no video file named", "video file not found", "file not found", "object not found", "404")),
        ("empty", ("is empty",)),
        ("truncated", ("truncated",)),
        ("timeout", ("timed out",)),
        ("network", ("attempts)", "cannot reach", "download failed", "access denied", "connection")),
        ("no_video_stream", ("no video stream",)),
    ):
        if any(mark in text for mark in marks):
            return kind
    return "decode"


def _add_node_figures(nodes: dict[tuple, dict], record: UnitRecord) -> None:
    """Sums one unit into its node's figures (units, videos, failures, the unit wall time)."""
    host, ip, node_id = record.node.get("host", "unknown"), record.node.get("ip"), record.node.get("ray_node_id")
    figures = nodes.setdefault((host, ip or "", node_id or ""), {"host": host, "ip": ip, "ray_node_id": node_id, "units": 0, "videos": 0,
                                                                  "samples": 0, "failures": 0, "unit_seconds": 0.0})  # fmt: skip
    figures["units"] += 1
    figures["samples"] += len(record.keys)
    figures["failures"] += len(record.failures)
    figures["videos"] += len(record.keys) + len(record.failures)
    figures["unit_seconds"] = round(figures["unit_seconds"] + record.wall_seconds, 3)


def _rate(figures: dict) -> float | None:
    """Videos per second of unit time: one unit slot's speed on that node (slots run side by side)."""
    return round(figures["videos"] / figures["unit_seconds"], 3) if figures["unit_seconds"] > 0 else None


def read_failures(store: Store) -> list[dict]:
    """The build's standing failures as failures.jsonl lists them (none when it has no such file)."""
    if not store.exists(FAILURES_NAME):
        return []
    return [json.loads(line) for line in store.read_bytes(FAILURES_NAME).decode("utf-8").splitlines() if line.strip()]


def kind_of(failure: dict) -> str:
    """A failure's class: the one recorded with it, or read from its reason (records from before kinds were written)."""
    return failure.get("kind") or failure_kind(failure["error"])


def read_manifest(store: Store) -> dict:
    if not store.exists(MANIFEST_NAME):
        raise BuildStateError(
            f"{store.url_of(MANIFEST_NAME)}: no manifest; the build is unfinished or was never "
            "merged (python -m pipeline merge-manifest --out URL)"
        )
    return json.loads(store.read_bytes(MANIFEST_NAME))
