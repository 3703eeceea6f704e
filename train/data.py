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

import random
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.io import decode_jpeg

from shards.reader import ShardReadError, iter_samples
from shards.sample_format import frame_members, is_complete_sample, sample_metadata

# torchvision 0.29 marks its JPEG decoder deprecated in favour of torchcodec; it is still the
# fastest batched CPU/GPU JPEG path available here, so the per-process warning is silenced.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning)


class StreamConfigError(ValueError):
    """A stream that cannot work as configured (e.g. too few shards to split)."""


@dataclass(frozen=True)
class StreamConfig:
    urls: tuple[str, ...]
    batch_size: int  # per rank
    max_frames: int = 12
    max_words: int = 32
    image_size: int = 224
    caption_mode: str = "random"  # or "expand": every caption is its own sample
    shuffle_buffer: int = 500
    resampled: bool = True
    seed: int = 0
    workers: int = 2

    def __post_init__(self) -> None:
        if self.caption_mode not in ("random", "expand"):
            raise StreamConfigError(f"caption_mode must be 'random' or 'expand', not {self.caption_mode!r}")
        if not self.urls:
            raise StreamConfigError("no shard URLs")


def decode_clip(sample: dict, max_frames: int, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG frames -> uint8 (max_frames, 3, S, S) and a bool frame mask.

    Bicubic resize of the short side to S and a centre crop, as CLIP4Clip; frames built at
    short side 224 skip the resize. Clips shorter than max_frames are padded and masked
    (CLIP4Clip's video mask); a frame that fails to decode raises, so the whole sample is
    skipped rather than trained on as a black frame.
    """
    names = frame_members(sample)[:max_frames]
    frames = torch.zeros(max_frames, 3, image_size, image_size, dtype=torch.uint8)
    for index, name in enumerate(names):
        image = decode_jpeg(torch.frombuffer(bytearray(sample[name]), dtype=torch.uint8))
        if min(image.shape[1:]) != image_size:
            image = TF.resize(image, image_size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        frames[index] = TF.center_crop(image, [image_size, image_size])
    mask = torch.zeros(max_frames, dtype=torch.bool)
    mask[: len(names)] = True
    return frames, mask


def _shard_cycle(config: StreamConfig, rng: random.Random, rank: int, world_size: int, worker: int, num_workers: int) -> Iterator[str]:
    if config.resampled:
        while True:
            yield rng.choice(config.urls)
    total = world_size * num_workers
    if len(config.urls) < total:
        raise StreamConfigError(
            f"{len(config.urls)} shards cannot be split over {world_size} ranks x {num_workers} workers without "
            "resampling; use resampled shards (the default), fewer workers, or more, smaller shards"
        )
    mine = list(config.urls[rank * num_workers + worker :: total])
    while True:
        rng.shuffle(mine)
        yield from mine


class ClipStream(IterableDataset):
    """Endless batches for one rank; see the module docstring for the guarantees."""

    def __init__(self, config: StreamConfig, tokenize: Callable, rank: int, world_size: int, start_step: int) -> None:
        super().__init__()
        self.config, self.tokenize = config, tokenize
        self.rank, self.world_size, self.start_step = rank, world_size, start_step

    def _items(self, samples: Iterable[dict], rng: random.Random, skipped: dict[str, int]) -> Iterator[tuple]:
        for sample in samples:
            if not is_complete_sample(sample):
                skipped["incomplete"] += 1
                continue
            try:
                captions = sample_metadata(sample)["captions"]
                frames, mask = decode_clip(sample, self.config.max_frames, self.config.image_size)
            except (RuntimeError, ValueError, KeyError) as error:
                skipped["undecodable"] += 1
                print(f"skipping sample {sample['__key__']} of {sample['__url__']}: {error}", flush=True)
                continue
            if not captions:
                skipped["no_caption"] += 1
                continue
            chosen = captions if self.config.caption_mode == "expand" else [rng.choice(captions)]
            for caption in chosen:
                yield frames, mask, caption, sample["__key__"]

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(repr((self.config.seed, self.start_step, self.rank, worker)))
        skipped = {"incomplete": 0, "undecodable": 0, "no_caption": 0, "unreadable_shards": 0}

        def on_shard_error(error: ShardReadError) -> bool:
            skipped["unreadable_shards"] += 1
            print(f"skipping rest of {error}", flush=True)
            return True

        shards = _shard_cycle(self.config, rng, self.rank, self.world_size, worker, num_workers)
        items = self._items(iter_samples(shards, on_shard_error), rng, skipped)
        shuffle = wds.shuffle(bufsize=self.config.shuffle_buffer, initial=min(100, self.config.shuffle_buffer), rng=rng)
        shuffled = shuffle(items)
        batch: list[tuple] = []
        for item in shuffled:
            batch.append(item)
            if len(batch) == self.config.batch_size:
                frames, masks, captions, keys = zip(*batch, strict=True)
                yield {
                    "frames": torch.stack(frames),
                    "mask": torch.stack(masks),
                    "tokens": self.tokenize(list(captions), context_length=self.config.max_words),
                    "keys": list(keys),
                    "worker": worker,
                    "skipped": dict(skipped),
                }
                batch = []


def make_loader(config: StreamConfig, tokenize: Callable, rank: int, world_size: int, start_step: int) -> DataLoader:
    stream = ClipStream(config, tokenize, rank, world_size, start_step)
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=config.workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if config.workers else None,
    )
