"""The training data stream: shards -> decoded clips + captions -> fixed-size batches.

Why it never hangs under DDP: every rank's stream is endless (shards are resampled with
replacement, or this rank's share of shards is cycled), and the trainer takes exactly
``steps_per_epoch`` batches from it on every rank. Ranks therefore always run the same
number of steps, however unevenly samples are spread over shards.

Why resuming is deterministic: each (rank, worker) stream is seeded from
``(seed, start_step, rank, worker)``; the checkpoint stores the step, so a restarted job
rebuilds the same stream every time it restarts from that step (a fresh draw, not a replay
of the batches consumed before the restart). With resampled shards an "epoch" is only a
step count, so one loader serves the whole run and its workers are started once.
"""

from __future__ import annotations

import os
import random
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypedDict

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from model.clip_decode import decode_clip_into
from model.frame_rule import FrameRule
from model.options import choices_problem
from pipeline.sampling import SlicePosition
from runtime.logs import get_logger
from shards.reader import ReadPolicy, ShardReadError, iter_samples
from shards.sample_format import usable_captions
from train.options import DataOptions


class Batch(TypedDict, total=False):
    """One rank's batch as the loop and ``Trainer.step`` see it, whichever side decoded the JPEGs
    (the data workers, or the training device through train/device_decode.py)."""

    frames: torch.Tensor  # (B, T, 3, S, S) uint8
    mask: torch.Tensor  # (B, T) bool: real frames
    tokens: torch.Tensor  # (B, max_words) CLIP token ids
    keys: list[str]
    worker: int  # the data worker that produced it (its skip counters are per worker)
    skipped: dict[str, int]  # that worker's running counts of incomplete / undecodable / captionless samples
    skipped_on_device: int  # device decoding only: clips its batched decode dropped


class StreamConfigError(ValueError):
    """A stream that cannot work as configured (e.g. too few shards to split)."""


@dataclass(kw_only=True)
class StreamConfig(DataOptions):
    """One rank's stream: the data options plus what the run resolved (its shards, its share of
    the batch, the model's input size, the builder's frame rule)."""

    urls: tuple[str, ...]  # one source's shards; a mixture's are in ``sources``
    batch_size: int  # per rank
    sources: tuple[tuple[tuple[str, ...], float], ...] = ()  # a mixture (train/mixture.py): each source's shards and weight
    max_frames: int = 12
    max_words: int = 32
    image_size: int = 224
    seed: int = 0
    read_policy: ReadPolicy = field(default_factory=ReadPolicy)
    slice_position: SlicePosition = SlicePosition.UNIFORM  # the builder's rule (model/frame_rule.py)

    @property
    def frame_rule(self) -> FrameRule:
        return FrameRule(self.max_frames, self.slice_position)

    def __post_init__(self) -> None:
        problem = choices_problem(self, DataOptions)
        if problem:
            raise StreamConfigError(problem)
        if not self.urls:
            raise StreamConfigError("no shard URLs")


def packed_jpegs(samples: list[dict], rule: FrameRule) -> dict[str, torch.Tensor]:
    """A batch's JPEG frames as one byte tensor plus offsets: three tensors cross the worker
    queue instead of batch x frames small ones (each would cost a shared-memory handle)."""
    members = [rule.members(sample) for sample in samples]
    frames = [sample[name] for sample, names in zip(samples, members, strict=True) for name in names]
    counts = [len(names) for names in members]
    offsets = torch.zeros(len(frames) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor([len(f) for f in frames], dtype=torch.int64).cumsum(0)
    data = torch.frombuffer(bytearray(b"".join(frames)), dtype=torch.uint8) if frames else torch.zeros(0, dtype=torch.uint8)
    return {"jpeg_bytes": data, "jpeg_offsets": offsets, "frame_counts": torch.tensor(counts, dtype=torch.int64)}


def _shard_cycle(config: StreamConfig, rng: random.Random, rank: int, world_size: int, worker: int, num_workers: int,
                 urls: tuple[str, ...] | None = None) -> Iterator[str]:  # fmt: skip
    urls = config.urls if urls is None else urls
    if config.resampled:
        while True:
            yield rng.choice(urls)
    total = world_size * num_workers
    if len(urls) < total:
        raise StreamConfigError(
            f"{len(urls)} shards cannot be split over {world_size} ranks x {num_workers} workers without "
            "resampling; use resampled shards (the default), fewer workers, or more, smaller shards"
        )
    mine = list(urls[rank * num_workers + worker :: total])
    while True:
        rng.shuffle(mine)
        yield from mine


class ClipStream(IterableDataset):
    """Endless batches for one rank; see the module docstring for the guarantees."""

    def __init__(self, config: StreamConfig, tokenize: Callable, rank: int, world_size: int, start_step: int) -> None:
        super().__init__()
        self.config, self.tokenize = config, tokenize
        self.rank, self.world_size, self.start_step = rank, world_size, start_step

    def _items(self, samples: Iterable[dict], rng: random.Random, skipped: dict[str, int]) -> Iterator[tuple[dict, str]]:
        """(sample, caption) pairs, still as JPEG bytes: the shuffle buffer holds compressed
        samples (about 0.2 MB each instead of 1.8 MB decoded)."""
        for sample in samples:
            captions, problem = usable_captions(sample)
            if problem:
                skipped[problem] += 1
                continue
            chosen = captions if self.config.caption_mode == "expand" else [rng.choice(captions)]
            for caption in chosen:
                yield sample, caption

    def _mixed_items(self, rng: random.Random, worker: int, num_workers: int, skipped: dict[str, int], on_shard_error: Callable,
                     drawn: list[int]) -> Iterator[tuple[dict, str]]:  # fmt: skip
        """A mixture's items: each drawn from a source chosen by weight, taken from that source's own stream
        (its shard order and caption draws from an RNG of its own, so one source's reads do not shift another's)."""
        sources = self.config.sources
        streams = []
        for index, (urls, _) in enumerate(sources):
            source_rng = random.Random(repr((self.config.seed, self.start_step, self.rank, worker, "source", index)))
            shards = _shard_cycle(self.config, source_rng, self.rank, self.world_size, worker, num_workers, urls)
            streams.append(self._items(iter_samples(shards, on_shard_error, self.config.read_policy), source_rng, skipped))
        weights = [weight for _, weight in sources]
        drawn.extend([0] * len(sources))
        while True:
            index = rng.choices(range(len(sources)), weights=weights)[0]
            drawn[index] += 1
            yield next(streams[index])

    def _batch(self, items: list[tuple[dict, str]], skipped: dict[str, int]) -> tuple[tuple | None, list[tuple[dict, str]]]:
        """Decodes straight into one shared-memory tensor. If a sample fails to decode, it is
        dropped and the good items are handed back to be completed from the stream (a batch
        is never padded with blanks)."""
        config = self.config
        frames = torch.empty(len(items), config.max_frames, 3, config.image_size, config.image_size, dtype=torch.uint8).share_memory_()
        mask = torch.zeros(len(items), config.max_frames, dtype=torch.bool)
        kept: list[int] = []
        for index, (sample, _) in enumerate(items):
            try:
                count = decode_clip_into(sample, frames[len(kept)], config.frame_rule)
            except (RuntimeError, ValueError) as error:
                skipped["undecodable"] += 1
                get_logger().warning("skipping sample %s of %s: %s", sample["__key__"], sample["__url__"], error)
                continue
            mask[len(kept), :count] = True
            kept.append(index)
        if len(kept) < len(items):
            return None, [items[i] for i in kept]
        return (frames, mask, [item[1] for item in items], [item[0]["__key__"] for item in items]), []

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(repr((self.config.seed, self.start_step, self.rank, worker)))
        skipped = {"incomplete": 0, "undecodable": 0, "no_caption": 0, "unreadable_shards": 0}

        def on_shard_error(error: ShardReadError) -> bool:
            skipped["unreadable_shards"] += 1
            get_logger().warning("skipping rest of %s", error)
            return True

        drawn: list[int] = []
        if len(self.config.sources) > 1:
            items = self._mixed_items(rng, worker, num_workers, skipped, on_shard_error, drawn)
        else:
            shards = _shard_cycle(self.config, rng, self.rank, self.world_size, worker, num_workers)
            items = self._items(iter_samples(shards, on_shard_error, self.config.read_policy), rng, skipped)
        shuffle = wds.shuffle(bufsize=self.config.shuffle_buffer, initial=min(100, self.config.shuffle_buffer), rng=rng)
        pending: list[tuple[dict, str]] = []
        for item in shuffle(items):
            pending.append(item)
            if len(pending) < self.config.batch_size:
                continue
            if self.config.decode_on == "device":
                yield {**packed_jpegs([sample for sample, _ in pending], self.config.frame_rule),
                       "tokens": self.tokenize([caption for _, caption in pending], context_length=self.config.max_words),
                       "keys": [sample["__key__"] for sample, _ in pending], "worker": worker, "skipped": dict(skipped),
                       "drawn_per_source": list(drawn)}  # fmt: skip
                pending = []
                continue
            decoded, pending = self._batch(pending, skipped)
            if decoded is None:
                continue
            frames, mask, captions, keys = decoded
            batch: Batch = {
                "frames": frames,
                "mask": mask,
                "tokens": self.tokenize(captions, context_length=self.config.max_words),
                "keys": keys,
                "worker": worker,
                "skipped": dict(skipped),
                "drawn_per_source": list(drawn),
            }
            yield batch


def ignore_sigterm_in_worker(_worker_id: int) -> None:
    """DataLoader workers ignore SIGTERM from everyone but their own main process.

    Slurm and torchrun signal the whole process group: a worker that died of that SIGTERM would
    make the main process raise ("DataLoader worker ... killed by signal") before it could agree
    on the stop with the other ranks and save, so the main process owns shutdown. It must still be
    able to end its workers: when the iterator outlives the training loop (an exception's
    traceback, a reference cycle), multiprocessing's exit hook ``terminate()``s the daemonic
    workers with SIGTERM and joins them, and a worker that ignored that signal too would hang the
    rank forever at exit. The kernel says who sent a signal (``si_pid``), so a thread waits for
    SIGTERM and exits only when the sender is the parent."""
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit the mask

    def obey_only_the_parent() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass  # the group's SIGTERM: the main process decides when to stop
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=obey_only_the_parent, name="sigterm-from-parent-only", daemon=True).start()


def make_loader(config: StreamConfig, tokenize: Callable, rank: int, world_size: int, start_step: int) -> DataLoader:
    stream = ClipStream(config, tokenize, rank, world_size, start_step)
    workers = config.resolved_workers()
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        worker_init_fn=ignore_sigterm_in_worker if workers else None,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
    )
