"""``python -m eval.index --checkpoint RUN --shards URL --out INDEX`` (also under torchrun).

Encodes every video of the shards once into a search index on local disk or any fsspec URL
(format: eval/index_format.py, README "Searching a collection"). Run it again with more shards
(or after a kill) and it encodes only the shards the index does not hold yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch.distributed as dist

from eval.ann import ANN_MIN_VIDEOS
from eval.index_format import IndexFormatError
from eval.indexer import IndexSettings, index_shards
from eval.trained_model import load_trained_model
from model.foreign_checkpoints import FORMATS
from runtime.distributed import init_distributed
from runtime.logs import setup_logging
from shards.manifest import BuildStateError
from shards.probe import probe_location
from shards.reader import ReadPolicy, ShardReadError
from shards.storage import StorageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.index", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (uses checkpoints/latest)")
    parser.add_argument("--shards", required=True, help="build folder / s3:// prefix with manifest, or brace pattern")
    parser.add_argument("--out", required=True, help="index folder (local or any fsspec URL); an existing index is appended to")
    parser.add_argument("--checkpoint-format", default="auto", choices=["auto", "project", *FORMATS])
    parser.add_argument("--base-weights", help="where the frozen base of a PEFT checkpoint is now, if it moved")
    parser.add_argument("--max-frames", type=int, help="frames per video (default: the checkpoint's)")
    parser.add_argument("--max-words", type=int, help="tokens per query (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=IndexSettings.batch_size, help="videos encoded per forward pass")
    parser.add_argument("--part-videos", type=int, default=IndexSettings.part_videos,
                        help="videos per committed part (a killed run redoes at most one part per rank)")
    parser.add_argument("--thumbnail-frames", type=int, default=IndexSettings.thumbnail_frames, help="frames in each video's thumbnail strip (1: one frame)")
    parser.add_argument("--thumbnail-height", type=int, default=IndexSettings.thumbnail_height, help="thumbnail height in pixels")
    parser.add_argument("--ann", choices=["auto", "always", "never"], default="auto",
                        help=f"approximate (faiss) index over the video vectors: auto builds it from {ANN_MIN_VIDEOS:,} videos on")
    parser.add_argument("--read-retries", type=int, default=ReadPolicy.retries)
    parser.add_argument("--read-timeout", type=float, default=ReadPolicy.timeout_s)
    args = parser.parse_args(argv)
    for name in ("batch_size", "part_videos", "thumbnail_frames", "thumbnail_height"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    setup_logging(int(os.environ.get("RANK", "0")))
    try:
        probe_location(args.shards, must_exist=True)
        probe_location(args.checkpoint, must_exist=True)
        probe_location(args.out, must_exist=False)
        info = init_distributed()
        trained = load_trained_model(args.checkpoint, args.checkpoint_format, args.base_weights, args.max_frames, args.max_words)
        settings = IndexSettings(args.batch_size, args.part_videos, args.thumbnail_frames, args.thumbnail_height, args.ann,
                                 ReadPolicy(retries=args.read_retries, timeout_s=args.read_timeout))  # fmt: skip
        summary = index_shards(trained, args.shards, args.out, info, settings)
    except (FileNotFoundError, RuntimeError, ShardReadError, BuildStateError, StorageError, IndexFormatError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary))
    return 1 if summary["failed_shards"] else 0


if __name__ == "__main__":
    sys.exit(main())
