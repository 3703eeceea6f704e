"""Training clips/s of a CLIP4Clip step: fed from shards vs synthetic tensors (the ceiling).

Both sides run the production step itself (train/step.py ``Trainer.step``: encoders under DDP's
wrapper module -> the similarity -> symmetric InfoNCE -> AdamW with the two learning-rate
groups, grad clipping, bf16 autocast), ViT-B/32 (random init: throughput
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

from bench.bench_gpu_suite import synchronize, synthetic_batch
from model import backbone
from model.factory import assemble_model
from runtime.cli import HelpFormatter
from shards.reader import shard_urls
from train.config import TrainConfig, config_problem
from train.data import StreamConfig
from train.device_decode import training_batches
from train.step import Trainer, compile_encoders


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--head", default="meanP", help="meanP, seqLSTM, seqTransf or tightTransf")
    parser.add_argument("--interaction", default="cosine", help="cosine, or DRL's wti / ti")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--decode-on", choices=["worker", "device"], default="worker", help="device: batched nvJPEG in the main process")
    parser.add_argument("--compile", action="store_true", help="torch.compile the two encoders")
    parser.add_argument("--device", default="cuda", help="cpu only to check the script runs (e.g. with --model tiny-ViT)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    # the production step (train/step.py Trainer): the run's defaults (AdamW 1e-4 / coef 1e-3, wd 0.2,
    # grad clip 1.0, bf16 autocast on GPU), this benchmark's head, similarity and batch
    config = TrainConfig(train_shards=args.shards, output_dir="", model=args.model, sim_header=args.head, interaction=args.interaction,
                         max_frames=args.frames, batch_size=args.batch_size, workers=args.workers, decode_on=args.decode_on)  # fmt: skip
    problem = config_problem(config)
    if problem:
        parser.error(problem)
    clip = backbone.load_clip(args.model, None)
    image_size = backbone.input_size(clip)
    model = assemble_model(clip, config).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        compile_encoders(model)
    trainer = Trainer(model, config, device, total_steps=2 * (args.steps + args.warmup))
    tokenize = backbone.tokenizer_for(args.model)

    def step(batch: dict) -> None:
        trainer.step(batch)

    resident = synthetic_batch(args.batch_size, args.frames, image_size, tokenize, device)

    def repeat():
        while True:
            yield resident

    ceiling = timed_steps(step, repeat(), args.steps, args.warmup, args.batch_size, device)
    stream = StreamConfig(
        urls=tuple(shard_urls(args.shards)),
        batch_size=args.batch_size,
        image_size=image_size,
        max_frames=args.frames,
        workers=args.workers,
        shuffle_buffer=256,
        decode_on=args.decode_on,
    )
    loader = training_batches(stream, tokenize, 0, 1, 0, device)
    streamed = timed_steps(step, loader, args.steps, args.warmup, args.batch_size, device)
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke run, not a throughput figure)",
        "model": args.model,
        "head": args.head,
        "interaction": args.interaction,
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
