"""``python -m eval --checkpoint CKPT --shards URL [--out DIR]`` (also under torchrun).

Encodes the split once (shards spread over ranks), scores text->video and video->text in
blocks, and writes ``metrics.json`` (raw scores, plus dual/inverted softmax reported
separately), ``report.html`` and ``rank_histogram.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from model.methods import registry
from model.options import CHECKPOINT_CHOICES
from runtime.cli import HelpFormatter
from shards.read_policy import ReadPolicy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (uses checkpoints/latest, or --which best)")
    parser.add_argument("--which", default="latest", choices=CHECKPOINT_CHOICES, help="a run folder's latest checkpoint, or the one --keep-best kept")
    parser.add_argument("--shards", required=True, help="test split: build folder / s3:// prefix with manifest, or brace pattern")
    parser.add_argument("--out", help="folder for metrics.json, report.html, rank_histogram.png")
    parser.add_argument("--batch-size", type=int, default=32, help="videos encoded per forward pass")
    parser.add_argument("--block-size", type=int, default=1024, help="query rows scored at a time (bounds memory)")
    parser.add_argument("--post", nargs="*", default=["dual_softmax", "inverted_softmax"], choices=["dual_softmax", "inverted_softmax"])
    parser.add_argument(
        "--rerank-topk",
        type=int,
        default=50,
        help="EERCF two-stage scoring for models with a fine similarity (--eercf, wti/ti, tightTransf, EMCL): "
        "coarse rank all, rescore the top k; reports accuracy and time next to fine-on-all (0: off)",
    )
    parser.add_argument(
        "--checkpoint-format",
        default="auto",
        choices=["auto", "project", *registry.checkpoint_formats()],
        help="who wrote --checkpoint: this project, or CLIP4Clip / DRL / EMCL-Net / EERCF (their pytorch_model.bin.N) or X-Pool "
        "(its model_best.pth, CLIP in Hugging Face's layout); auto tells them apart where the keys can (CLIP4Clip's tightTransf, "
        "DRL's WTI, EERCF's matrices, X-Pool's pool_frames) and asks otherwise",
    )
    parser.add_argument("--max-frames", type=int, help="frames per video (default: the checkpoint's; 12 for reference checkpoints)")
    parser.add_argument("--max-words", type=int, help="tokens per caption (default: the checkpoint's; 32 for reference checkpoints)")
    parser.add_argument("--base-weights", help="where the frozen base of a PEFT checkpoint is now, if it moved")
    parser.add_argument("--read-retries", type=int, default=ReadPolicy.retries, help="attempts after a failed shard read before the shard is skipped")
    parser.add_argument("--read-timeout", type=float, default=ReadPolicy.timeout_s, help="seconds before a stalled object-store read counts as failed")
    parser.add_argument("--qb-norm-bank", help="shards of another split (QB-Norm: the training split) whose captions and videos are the "
                        "query bank of --post's normalisations, reported beside the test-bank numbers")
    parser.add_argument("--report-queries", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0, help="which report queries are sampled")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON document on stdout instead of the table, "
                                                            "everything else on stderr (for scripts)")
    args = parser.parse_args(argv)
    import torch.distributed as dist

    from eval.evaluate import run
    from eval.summary_table import metrics_table
    from shards.manifest import BuildStateError
    from shards.reader import ShardReadError
    from shards.storage import StorageError

    try:
        result = run(args)
    except (FileNotFoundError, RuntimeError, ShardReadError, BuildStateError, StorageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:  # the process group is gone by now; torchrun's RANK says who prints
        if args.json:
            print(json.dumps({k: result[k] for k in ("raw", *args.post, "coarse_to_fine", "qb_norm_bank") if k in result}))
        else:
            print(f"{result['model']['sim_header']} at step {result['step']} on {args.shards}: {result['num_videos']} videos, "
                  f"{result['num_captions']} captions")
            print(metrics_table(result))
            where = f"{args.out.rstrip('/')}/metrics.json (and report.html)" if args.out else "not written: add --out DIR for metrics.json"
            print(f"metrics: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
