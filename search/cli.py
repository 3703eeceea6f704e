"""``python -m search --index INDEX "a red car drifting" [-k 10]``: the top videos of an index.

Loads the index (search/index_format.py) and the model that made it, encodes each query and
prints its top k with scores, the first stage being exact unless the index holds an
approximate one (``--mode``), and the model's fine similarity rescoring the top
``--rerank-topk`` where it has one (search/searcher.py).
"""

from __future__ import annotations

import argparse
import sys

from runtime.cli import HelpFormatter
from search.options import add_searcher_arguments, check_searcher_arguments


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
    from search.answers import answer_queries  # torch and the model: only once the options are known to be usable

    return answer_queries(args)


if __name__ == "__main__":
    sys.exit(main())
