"""Training clips/s of a CLIP4Clip step: fed from shards vs synthetic tensors (the ceiling).

Both sides run the same step (train/: RetrievalStep -> symmetric InfoNCE -> AdamW with the
two learning-rate groups, grad clipping, bf16 autocast), ViT-B/32 (random init: throughput
does not depend on the weights), 12 frames, batch 128, meanP by default. The ceiling
reuses one device-resident uint8 batch; the streamed run takes every batch from
train/data.py's DataLoader over real shards (JPEG decode on CPU workers).

    python -m bench.bench_train_gpu --shards DIR [--workers 14] [--steps 40] [--warmup 10]
        [--decode-on device] [--compile] [--channels-last] [--batch-size 256]

``--device cpu --model tiny-ViT`` only checks that the script and its options run.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from shards.reader import shard_urls
from train import backbone
from train.data import StreamConfig, make_loader
from train.device_decode import DeviceDecodedBatches
from train.features import TextFeatures, VideoFeatures
from train.loss import symmetric_cross_entropy
from train.model import CLIP4Clip
from train.optim import build_optimizer
from train.trainer import RetrievalStep


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step_fn, batches, steps: int, warmup: int, batch_size: int, device: torch.device) -> dict:
    for _ in range(warmup):
        step_fn(next(batches))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step_fn(next(batches))
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"clips_per_s": steps * batch_size / seconds, "seconds": seconds, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--head", default="meanP")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--decode-on", choices=["worker", "device"], default="worker", help="device: batched nvJPEG in the main process")
    parser.add_argument("--compile", action="store_true", help="torch.compile the two encoders")
    parser.add_argument("--device", default="cuda", help="cpu only to check the script runs (e.g. with --model tiny-ViT)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    autocast_dtype = torch.bfloat16
    clip = backbone.load_clip(args.model, None)
    image_size = backbone.input_size(clip)
    model = CLIP4Clip(clip, args.head, args.frames).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model.clip.visual = torch.compile(model.clip.visual)
        model.clip.transformer = torch.compile(model.clip.transformer)
    step_module = RetrievalStep(model)
    optimizer = build_optimizer(model, 1e-4, 1e-3, 0.2)
    tokenize = backbone.tokenizer_for(args.model)

    def step(batch: dict) -> None:
        tokens = batch["tokens"].to(device, non_blocking=True)
        frames = batch["frames"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=device.type == "cuda"):
            text_pooled, _, _, frame_features, pooled = step_module(tokens, frames, mask)
            logits = model.logits(TextFeatures(text_pooled), VideoFeatures(frame_features, mask, pooled))
        loss = symmetric_cross_entropy(logits.float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    synthetic_batch = {
        "frames": torch.randint(0, 256, (args.batch_size, args.frames, 3, image_size, image_size), dtype=torch.uint8, device=device),
        "mask": torch.ones(args.batch_size, args.frames, dtype=torch.bool, device=device),
        "tokens": tokenize(["a red circle moves from left to right"] * args.batch_size, context_length=32).to(device),
    }

    def repeat():
        while True:
            yield synthetic_batch

    ceiling = timed_steps(step, repeat(), args.steps, args.warmup, args.batch_size, device)
    config = StreamConfig(
        urls=tuple(shard_urls(args.shards)),
        batch_size=args.batch_size,
        image_size=image_size,
        max_frames=args.frames,
        workers=args.workers,
        shuffle_buffer=256,
        decode_on=args.decode_on,
    )
    loader = iter(make_loader(config, tokenize, 0, 1, 0))
    if args.decode_on == "device":
        loader = DeviceDecodedBatches(loader, args.batch_size, args.frames, image_size, device)
    streamed = timed_steps(step, loader, args.steps, args.warmup, args.batch_size, device)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke run, not a throughput figure)",
        "model": args.model,
        "head": args.head,
        "batch_size": args.batch_size,
        "frames": args.frames,
        "workers": args.workers,
        "decode_on": args.decode_on,
        "compile": args.compile,
        "channels_last": args.channels_last,
        "cpu_count": os.cpu_count(),
        "synthetic_ceiling": ceiling,
        "streamed": streamed,
        "streamed_over_ceiling": streamed["clips_per_s"] / ceiling["clips_per_s"],
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
