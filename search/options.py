"""The search commands' options and their defaults: ``python -m search``, ``search.index`` and ``search.serve``.

Free of torch (and of numpy), so that every search command's ``--help`` and argument errors answer
at once; the modules that act on an option import its default from here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from shards.read_policy import ReadPolicy

SEARCH_MODES = ("auto", "exact", "approximate")  # search/searcher.py: the first stage
DEFAULT_RERANK_TOPK = 50  # as python -m eval's --rerank-topk
QUERY_ENCODERS = ("auto", "fp32", "int8")  # search/query_encoder.py
# search/ann.py: an index this large gets an approximate (faiss) first stage with --ann auto. The exact scan is
# linear in N: 9 ms per query at 100k and 147 ms at 1M on 2 cores (BENCHMARKS.md), so from about 200k on it
# costs more than encoding the query (31 ms, ViT-B/32's text tower)
ANN_MIN_VIDEOS = 200_000
DEFAULT_MAX_BATCH = 32  # search/query_batcher.py: queries encoded together by the service
DEFAULT_MAX_UPLOAD_BYTES = 64 << 20  # a query video or image (python -m search.serve --max-upload-mb)
DEFAULT_UPLOAD_TIMEOUT_S = 60.0  # a body must arrive within this (python -m search.serve --upload-timeout-s)


@dataclass
class IndexSettings:
    """How ``search.index`` writes an index (search/indexer.py)."""

    batch_size: int = 32
    part_videos: int = 5000  # rows per committed part: what a killed run may have to redo
    thumbnail_frames: int = 4
    thumbnail_height: int = 96
    ann: str = "auto"  # auto: from ANN_MIN_VIDEOS on; always; never
    read_policy: ReadPolicy | None = None


@dataclass(frozen=True)
class RayIndexOptions:
    """How ``search.index --distributor ray`` cuts the work into tasks (search/ray_index.py)."""

    shards_per_task: int = 16
    cpus_per_task: float = 1.0
    gpus_per_task: float | None = None  # None: 1 when the cluster has GPUs, else 0


def add_searcher_arguments(parser: argparse.ArgumentParser, query_encoder: str = "fp32") -> None:
    """How the first stage, the rerank and the model are chosen: the same for python -m search and search.serve
    (``query_encoder``: the default, auto for the long-running service, whose start-up check pays for itself)."""
    parser.add_argument("--mode", choices=SEARCH_MODES, default="auto",
                        help="first stage: exact scan, or the index's approximate (faiss) index; auto uses it where the index has one")
    parser.add_argument("--rerank-topk", type=int, default=DEFAULT_RERANK_TOPK,
                        help="candidates the model's fine similarity rescores, for models that have one (0: coarse only)")
    parser.add_argument("--nprobe", type=int, default=None,
                        help="clusters the approximate index visits per query (default: what the index was built for, index.json's ann.nprobe)")
    parser.add_argument("--checkpoint", help="the model's checkpoint, if it moved since indexing (its weights are checked)")
    parser.add_argument("--base-weights", help="where the frozen base of a PEFT checkpoint is now, if it moved")
    parser.add_argument("--query-encoder", choices=QUERY_ENCODERS, default=query_encoder,
                        help="the query's text encoder on a CPU: fp32 (exact: the evaluator's scores), int8 (dynamic int8 text transformer), "
                             "auto: int8 where it ranks the index's own captions as fp32 does, else fp32")  # fmt: skip
    parser.add_argument("--ungrouped", action="store_true",
                        help="one hit per indexed row, even where rows are windows of one video (default: one per video, its best moment first)")


def check_searcher_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.rerank_topk < 0 or (args.nprobe is not None and args.nprobe < 1):
        parser.error("--nprobe must be at least 1, --rerank-topk at least 0")
