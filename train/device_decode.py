"""JPEG decoding on the training device, in batches: the option for GPUs with few CPU cores.

With ``--decode-on device`` the data workers only read shards, shuffle and tokenise; they ship
each clip's JPEG bytes, and the main process decodes the whole batch's frames in one
``torchvision.io.decode_jpeg(list, device=cuda)`` call (nvJPEG), then resizes/crops on the GPU.
One H100 can then be fed by a few CPU workers instead of a dozen. Without a GPU the same path
runs on the CPU (it is how the tests exercise it); CPU decoding in the workers stays the default.

A clip whose JPEGs fail to decode is dropped and counted, never turned into black frames, and
the batch is completed with clips from the next worker batch, so every step still sees exactly
``batch_size`` clips (a smaller batch on one rank would break the all-gather in DDP).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torchvision.io import ImageReadMode, decode_jpeg

from model.clip_decode import fit_square
from runtime.logs import get_logger
from train.data import Batch, StreamConfig, make_loader


def _decode_frames(jpegs: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)


def decode_clips_on_device(
    clips: list[list[torch.Tensor]], max_frames: int, image_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Clips of JPEG byte tensors -> uint8 (B', T, 3, S, S) on ``device``, masks, and the
    indices of the clips that decoded (B' of them). One batched call when all frames decode;
    if any fails, clip by clip to find which."""
    flat = [jpeg for clip in clips for jpeg in clip]
    try:
        images = _decode_frames(flat, device)
        decoded = []
        start = 0
        for clip in clips:
            decoded.append(images[start : start + len(clip)])
            start += len(clip)
    except RuntimeError:
        decoded = []
        for clip in clips:
            try:
                decoded.append(_decode_frames(clip, device))
            except RuntimeError:
                decoded.append(None)
    kept = [i for i, images in enumerate(decoded) if images is not None]
    frames = torch.zeros(len(kept), max_frames, 3, image_size, image_size, dtype=torch.uint8, device=device)
    mask = torch.zeros(len(kept), max_frames, dtype=torch.bool, device=device)
    for row, index in enumerate(kept):
        for slot, image in enumerate(decoded[index][:max_frames]):
            frames[row, slot] = fit_square(image, image_size)
            mask[row, slot] = True
    return frames, mask, kept


def unpack_clips(raw: dict) -> list[list[torch.Tensor]]:
    """The worker's packed bytes back into per-clip lists of JPEG tensors (views, no copy)."""
    data, offsets = raw["jpeg_bytes"], raw["jpeg_offsets"].tolist()
    frames = [data[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    clips, start = [], 0
    for count in raw["frame_counts"].tolist():
        clips.append(frames[start : start + count])
        start += count
    return clips


class DeviceDecodedBatches:
    """Wraps the loader's JPEG batches into decoded batches of exactly ``batch_size`` clips."""

    def __init__(self, batches: Iterator[dict], batch_size: int, max_frames: int, image_size: int, device: torch.device) -> None:
        self.batches, self.batch_size = batches, batch_size
        self.max_frames, self.image_size, self.device = max_frames, image_size, device
        self.undecodable = 0
        self._frames: list[torch.Tensor] = []
        self._masks: list[torch.Tensor] = []
        self._tokens: list[torch.Tensor] = []
        self._keys: list[str] = []
        self._last: dict = {}

    def __iter__(self) -> DeviceDecodedBatches:
        return self

    def __next__(self) -> Batch:
        while len(self._keys) < self.batch_size:
            raw = next(self.batches)
            frames, mask, kept = decode_clips_on_device(unpack_clips(raw), self.max_frames, self.image_size, self.device)
            for index in sorted(set(range(len(raw["keys"]))) - set(kept)):
                self.undecodable += 1
                get_logger().warning("skipping sample %s: its JPEG frames do not decode", raw["keys"][index])
            self._frames.extend(frames.unbind(0))
            self._masks.extend(mask.unbind(0))
            self._tokens.extend(raw["tokens"][kept].to(self.device).unbind(0))
            self._keys.extend(raw["keys"][i] for i in kept)
            self._last = raw
        size = self.batch_size
        batch: Batch = {
            "frames": torch.stack(self._frames[:size]),
            "mask": torch.stack(self._masks[:size]),
            "tokens": torch.stack(self._tokens[:size]),
            "keys": self._keys[:size],
            "worker": self._last["worker"],
            "skipped": self._last["skipped"],
            "skipped_on_device": self.undecodable,
        }
        del self._frames[:size], self._masks[:size], self._tokens[:size], self._keys[:size]
        return batch


def training_batches(config: StreamConfig, tokenize, rank: int, world_size: int, start_step: int, device: torch.device) -> Iterator[Batch]:  # noqa: ANN001
    """This rank's endless stream of ``Batch``es, whichever side decodes the JPEGs: the loop and the
    GPU benchmark never see the decode mode."""
    batches = iter(make_loader(config, tokenize, rank, world_size, start_step))
    if config.decode_on == "device":
        return DeviceDecodedBatches(batches, config.batch_size, config.max_frames, config.image_size, device)
    return batches


def stop_batch_workers(batches: Iterator) -> None:
    """Ends the loader's worker processes now, at the end of a run, while the run still owns them. Left to
    the interpreter's exit, multiprocessing's exit hook terminates them (they leave with 143, their own
    SIGTERM exit: train/data.py) and DataLoader's SIGCHLD handler then raises inside that hook: an
    "Exception ignored in atexit callback ... exited unexpectedly with exit code 143" after a run that
    succeeded."""
    source = batches.batches if isinstance(batches, DeviceDecodedBatches) else batches
    shutdown = getattr(source, "_shutdown_workers", None)  # DataLoader's own orderly stop (a loader without workers has none)
    if shutdown is not None:
        shutdown()
