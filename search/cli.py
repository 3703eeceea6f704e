"""``python -m search --index INDEX "a red car drifting" [-k 10]``: the top videos of an index.

Loads the index (search/index_format.py) and the model that made it, encodes each query and
prints its top k with scores, the first stage being exact unless the index holds an
approximate one (``--mode``), and the model's fine similarity rescoring the top
``--rerank-topk`` where it has one (search/searcher.py).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from runtime.cli import HelpFormatter
from search.index_format import IndexFormatError
from search.media_query import search_media_file
from search.moments import Hit, moment_text, time_range
from search.query import QueryError, check_query
from search.query_encoder import QUERY_ENCODERS
from search.searcher import DEFAULT_RERANK_TOPK, SEARCH_MODES, Searcher, SearchResult, open_searcher
from shards.storage import StorageError


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


def search_device() -> torch.device:
    """The GPU when there is one (the query encoder is the cost of a search), else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def searcher_from_arguments(args: argparse.Namespace) -> Searcher:
    """The index's searcher, as the command line's options describe it."""
    return open_searcher(args.index, args.checkpoint, args.base_weights, args.mode, args.rerank_topk, args.nprobe, search_device(),
                         not args.ungrouped, args.query_encoder)  # fmt: skip


def hit_json(hit: Hit) -> dict:
    """A hit's record, and for a moment of a longer video its time range and the video's next best moments."""
    answer = {"row": hit.row, "score": hit.score, "stage": hit.stage, **hit.record}
    span = time_range(hit.record)
    if span is not None:
        answer["start_s"], answer["end_s"] = span
    if hit.moments:
        answer["moments"] = [hit_json(moment) for moment in hit.moments]
    return answer


def result_json(result: SearchResult) -> dict:
    return {
        "query": result.query,
        "method": result.method,
        "reranked": result.reranked,
        "batch_size": result.batch_size,
        "milliseconds": {name: round(value, 3) for name, value in result.milliseconds.items()},
        "hits": [{"rank": rank, **hit_json(hit)} for rank, hit in enumerate(result.hits, 1)],
        **({"note": result.note} if result.note else {}),
    }


def stages_text(result: SearchResult) -> str:
    return f"top {result.reranked} rescored by the model's fine similarity" if result.reranked else "coarse score only"


def print_result(result: SearchResult) -> None:
    timing = ", ".join(f"{name} {value:.1f} ms" for name, value in result.milliseconds.items())
    print(f"{result.query!r}: {result.method} search, {stages_text(result)} ({timing})")
    if result.note:
        print(f"  ({result.note})")
    for rank, hit in enumerate(result.hits, 1):
        caption = hit.record["captions"][0] if hit.record["captions"] else ""
        moment = moment_text(hit.record)
        print(f"{rank:4d}  {hit.score:8.4f}  {hit.stage:6}  {hit.record['key']:24}  {moment + '  ' if moment else ''}{caption}")
        for moment in hit.moments:
            print(f"{'':4}  {moment.score:8.4f}  {moment.stage:6}  {'  also ' + moment.record['key']:24}  {moment_text(moment.record)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--index", required=True, help="index folder or fsspec URL (python -m search.index)")
    parser.add_argument("queries", nargs="*", help="one or more text queries")
    parser.add_argument("--like", action="append", default=[], metavar="KEY",
                        help="more like an indexed entry (its coarse video vector as the query; repeatable)")
    parser.add_argument("--vector", action="append", default=[], metavar="FILE.npy",
                        help="a vector in the index's coarse space as the query (a 1-D .npy of its dimension; repeatable)")
    parser.add_argument("--file", action="append", default=[], metavar="PATH",
                        help="a video or image file as the query, decoded with the index's own frame rule (repeatable)")
    parser.add_argument("-k", type=int, default=10, help="results per query")
    add_searcher_arguments(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object per query instead of a table")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("-k must be at least 1")
    check_searcher_arguments(parser, args)
    if not (args.queries or args.like or args.vector or args.file):
        parser.error("give a text query, --like KEY, --vector FILE.npy or --file VIDEO")
    try:
        for query in args.queries:  # before the model loads: a typo should not cost seconds
            check_query(query)
        vectors = [(path, np.load(path, allow_pickle=False)) for path in args.vector]
        searcher = searcher_from_arguments(args)
        results = [searcher.search(query, args.k) for query in args.queries]
        results += [searcher.search_like(key, args.k) for key in args.like]
        results += [searcher.search_vector(vector, args.k, f"vector {path}") for path, vector in vectors]
        results += [search_media_file(searcher, path, args.k) for path in args.file]
        for result in results:
            if args.json:
                print(json.dumps(result_json(result), ensure_ascii=False))
            else:
                print_result(result)
    except (QueryError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, RuntimeError, StorageError, IndexFormatError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
