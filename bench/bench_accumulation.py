"""Peak memory and step time of one optimiser step over a global batch, whole vs ``--accum-freq`` micro-batches,
side by side on this machine: the production ``Trainer.step`` on one resident batch (tiny model, CPU), each
configuration in its own process so that its peak resident memory (ru_maxrss) is its own; rounds interleaved.

    python -m bench.bench_accumulation [--batch 64 --accum 4 --model tiny-ViT-112 --frames 4 --steps 4 --rounds 3]

The micro-batch run encodes every clip twice (once without gradients, once with), so it costs time to save
activation memory; the ratio printed is what a user trades.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from runtime.cli import HelpFormatter


def one_configuration(model: str, frames: int, batch: int, accum: int, steps: int, warmup: int) -> dict:
    from bench.bench_gpu_suite import synthetic_batch
    from model import backbone
    from model.factory import assemble_model
    from train.config import TrainConfig
    from train.step import Trainer

    config = TrainConfig(train_shards="", output_dir="", model=model, max_frames=frames, sim_header="seqTransf", batch_size=batch // accum,
                         accum_freq=accum, optimizer="adamw")  # fmt: skip
    torch.manual_seed(0)
    net = assemble_model(backbone.load_clip(model, None), config)
    trainer = Trainer(net, config, torch.device("cpu"), total_steps=100)
    data = synthetic_batch(batch, frames, backbone.input_size(net.clip), backbone.tokenizer_for(model), torch.device("cpu"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(warmup):
        trainer.step(data)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(data)
    seconds = (time.perf_counter() - start) / steps
    return {"step_s": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "before_steps_mib": before / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default="tiny-ViT-112")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="global batch of one optimiser step")
    parser.add_argument("--accum", type=int, default=4, help="micro-batches of the accumulated run")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        accum = int(args.child[0])
        print(json.dumps(one_configuration(args.model, args.frames, args.batch, accum, args.steps, args.warmup)))
        return
    rows: dict[int, list[dict]] = {1: [], args.accum: []}
    for _ in range(args.rounds):
        for accum in rows:
            command = [sys.executable, "-m", "bench.bench_accumulation", "--model", args.model, "--frames", str(args.frames), "--batch",
                       str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup), "--child", str(accum)]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows[accum].append(json.loads(done.stdout.strip().splitlines()[-1]))
    whole, split = rows[1], rows[args.accum]
    median = lambda rs, key: statistics.median(r[key] for r in rs)  # noqa: E731
    print(f"{args.model}, seqTransf, {args.frames} frames, global batch {args.batch}, {args.steps} steps x {args.rounds} rounds, CPU, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| run | step time (s) | peak RSS (MiB) | peak RSS - before steps (MiB) |")
    print("|---|---|---|---|")
    for name, rs in ((f"batch {args.batch}", whole), (f"{args.batch // args.accum} x {args.accum}", split)):
        print(f"| {name} | {median(rs, 'step_s'):.2f} | {median(rs, 'peak_mib'):.0f} | {median(rs, 'peak_mib') - median(rs, 'before_steps_mib'):.0f} |")
    print(f"ratio (micro-batches / whole): step time {median(split, 'step_s') / median(whole, 'step_s'):.2f}x, step memory "
          f"{(median(split, 'peak_mib') - median(split, 'before_steps_mib')) / (median(whole, 'peak_mib') - median(whole, 'before_steps_mib')):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
