"""``python -m search.index --checkpoint RUN --shards URL --out INDEX`` (also under torchrun).

With ``--distributor ray`` the shards are encoded by tasks on a Ray cluster (search/ray_index.py).

Encodes every video of the shards once into a search index on local disk or any fsspec URL
(format: search/index_format.py, docs/search.md). Run it again with more shards
(or after a kill) and it encodes only the shards the index does not hold yet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from model.methods import registry
from model.options import CHECKPOINT_CHOICES
from runtime.cli import HelpFormatter
from runtime.logs import setup_logging
from runtime.ray_cluster import RayOptions
from search.options import ANN_MIN_VIDEOS, IndexSettings, RayIndexOptions
from shards.read_policy import ReadPolicy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.index", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (uses checkpoints/latest, or --which best)")
    parser.add_argument("--which", default="latest", choices=CHECKPOINT_CHOICES, help="a run folder's latest checkpoint, or the one --keep-best kept")
    parser.add_argument("--shards", required=True, help="build folder / s3:// prefix with manifest, or brace pattern")
    parser.add_argument("--out", required=True, help="index folder (local or any fsspec URL); an existing index is appended to")
    parser.add_argument("--checkpoint-format", default="auto", choices=["auto", "project", *registry.checkpoint_formats()])
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
    ray_group = parser.add_argument_group("Ray cluster (--distributor ray; docs/clusters.md)")
    ray_group.add_argument("--distributor", choices=["local", "ray"], default="local",
                           help="local: this process (or torchrun's ranks); ray: one task per group of shards on a Ray cluster")
    ray_group.add_argument("--ray-address", help="cluster to join (default: RAY_ADDRESS, else a cluster started on this machine, else a new local one)")
    ray_group.add_argument("--ray-max-retries", type=int, default=RayOptions.max_retries, help="attempts after a task's worker or node dies")
    ray_group.add_argument("--ray-shards-per-task", type=int, default=RayIndexOptions.shards_per_task, help="shards encoded by one task")
    ray_group.add_argument("--ray-cpus-per-task", type=float, default=RayIndexOptions.cpus_per_task, help="CPUs a task reserves (and its torch threads)")
    ray_group.add_argument("--ray-gpus-per-task", type=float, default=None, help="GPUs a task reserves (default: 1 when the cluster has GPUs, else 0)")
    args = parser.parse_args(argv)
    if args.distributor == "ray" and "WORLD_SIZE" in os.environ:
        parser.error("--distributor ray runs its own tasks: start it as one process, not under torchrun")
    if args.ray_shards_per_task < 1 or args.ray_cpus_per_task <= 0:
        parser.error("--ray-shards-per-task must be at least 1 and --ray-cpus-per-task above 0")
    for name in ("batch_size", "part_videos", "thumbnail_frames", "thumbnail_height"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    # the options are usable: now torch, the model and the shards (``--help`` and a bad option never wait for them)
    import torch.distributed as dist

    from model.trained_model import describe_choice, resolve_checkpoint
    from runtime.distributed import init_distributed
    from runtime.ray_cluster import task_location
    from search.index_format import IndexFormatError
    from search.indexer import index_shards
    from search.ray_index import ModelSource, index_shards_on_ray
    from shards.manifest import BuildStateError
    from shards.probe import probe_location
    from shards.reader import ShardReadError
    from shards.storage import StorageError

    setup_logging(int(os.environ.get("RANK", "0")))
    try:
        probe_location(args.shards, must_exist=True)
        probe_location(args.checkpoint, must_exist=True)
        probe_location(args.out, must_exist=False)
        settings = IndexSettings(args.batch_size, args.part_videos, args.thumbnail_frames, args.thumbnail_height, args.ann,
                                 ReadPolicy(retries=args.read_retries, timeout_s=args.read_timeout))  # fmt: skip
        chosen = resolve_checkpoint(args.checkpoint, args.which)  # the index records this exact file
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"checkpoint: {describe_choice(args.checkpoint, args.which)}", file=sys.stderr)
        source = ModelSource(task_location(chosen), args.checkpoint_format, args.base_weights and task_location(args.base_weights),
                             args.max_frames, args.max_words)  # fmt: skip
        if args.distributor == "ray":
            ray_options = RayOptions(address=args.ray_address, max_retries=args.ray_max_retries)
            options = RayIndexOptions(args.ray_shards_per_task, args.ray_cpus_per_task, args.ray_gpus_per_task)
            summary = index_shards_on_ray(source, task_location(args.shards), task_location(args.out), settings, ray_options, options)
        else:
            info = init_distributed()
            summary = index_shards(source.load(), args.shards, args.out, info, settings)
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
