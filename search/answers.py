"""The answers of ``python -m search``: each query's top videos, as a table or one JSON object per query.

The options are parsed by search/cli.py first, without torch; this module loads the index and
its model. ``result_json`` and ``stages_text`` are also the service's and the page's wording.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from search.index_format import IndexFormatError
from search.media_query import search_media_file
from search.moments import Hit, moment_text, time_range
from search.query import QueryError, check_query
from search.searcher import Searcher, SearchResult, open_searcher
from shards.storage import StorageError


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


def answer_queries(args: argparse.Namespace) -> int:
    """Every query of the command line answered and printed; 2 with the reason when one cannot be."""
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
