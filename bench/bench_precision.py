"""Per-step cost of each ``--precision`` on this machine, side by side: the production ``Trainer.step``
(bench/bench_gpu_suite.py's ceiling: one resident batch, the method's own optimiser) under fp32, bf16,
fp16 (CLIP4Clip's convert_weights regime) and amp-fp16 (DGL's), interleaved over ``--rounds`` so load on
the machine falls on all of them alike; ratios to bf16 from the median of the rounds.

    python -m bench.bench_precision [--model tiny-ViT-112 --frames 4 --batch 16 --steps 6 --rounds 3]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bench.bench_gpu_suite import ceiling
from runtime.cli import HelpFormatter

PRECISIONS = ("bf16", "fp32", "fp16", "amp-fp16")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default="tiny-ViT-112")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sim-header", default="seqTransf")
    args = parser.parse_args(argv)
    args.shards, args.workers = "", 0
    device = torch.device("cpu")
    rates: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for _ in range(args.rounds):
        for precision in PRECISIONS:
            row = ceiling(args, device, args.batch, False, sim_header=args.sim_header, precision=precision)
            rates[precision].append(row["clips_per_s"])
    base = statistics.median(rates["bf16"])
    print(f"{args.model}, {args.sim_header}, {args.frames} frames, batch {args.batch}, {args.steps} steps x {args.rounds} rounds, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| precision | clips/s (median) | step time vs bf16 |")
    print("|---|---|---|")
    for precision in PRECISIONS:
        median = statistics.median(rates[precision])
        print(f"| {precision} | {median:.1f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()
