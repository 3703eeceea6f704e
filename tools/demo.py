"""The README's first command: the whole product on embedded sample data, end to end.

    python -m tools.demo [--out demo_out]

1. generates the moving-shapes video set (tools.make_sample_data), with broken inputs;
2. builds train and test shards from it (python -m pipeline build), and shards of the
   real MSR-VTT test sample that sits beside the repository (../shared/data), if present (and evaluates on it after training);
3. inspects the shards (each build has printed its manifest summary and its failures by reason);
4. trains a tiny CLIP4Clip (seqTransf head, random init: no weights can be downloaded) on the
   train shards for a few minutes of CPU, evaluating on the test split every 40 steps;
5. evaluates the final checkpoint (python -m eval), which prints R@1/5/10, MdR, MnR both ways
   beside chance, with report.html and rank_histogram.png in OUT/eval;
6. indexes the test split (python -m search.index) and prints one example search over it
   (python -m search): a test caption whose video the model ranks first, if any (else the first
   caption, said so), with that video's rank, chance, and how many captions rank their video first;
   then the command that serves the search page.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from eval.__main__ import main as eval_main
from pipeline.__main__ import main as pipeline_main
from runtime.cli import HelpFormatter
from search.cli import main as search_main
from search.index import main as index_main
from tools.inspect_shards import main as inspect_main
from tools.make_sample_data import make_sample_data
from train.__main__ import main as train_main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MSRVTT_SAMPLE = os.path.join(REPO_ROOT, "..", "shared", "data", "msrvtt_test_sample")


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def build(annotations: str, videos: str, out: str, *extra: str) -> None:
    code = pipeline_main(["build", "--annotations", annotations, "--videos", videos, "--out", out, "--samples-per-shard", "16", *extra])
    if code != 0:
        sys.exit(f"demo: build of {annotations} failed with exit code {code}")


@dataclass(frozen=True)
class ExampleSearch:
    query: str
    rank: int  # of the best-ranked video that carries the query as a caption
    captions_ranked_first: int  # distinct captions of the index whose video ranks first
    captions: int
    videos: int


def example_query(index: str) -> ExampleSearch:
    """A caption of the indexed test split whose own video the trained model ranks first, or the first
    caption when it ranks none first (said as it is). Every distinct caption is searched over the whole
    index; generated captions can repeat, and any video that carries one counts as its match."""
    from search.searcher import open_searcher  # torch: imported when the demo gets here, not for --help

    searcher = open_searcher(index)
    videos = len(searcher.index)
    owners: dict[str, set[int]] = {}
    for row in range(videos):
        for caption in searcher.index.record(row)["captions"]:
            owners.setdefault(caption, set()).add(row)
    if not owners:
        raise ValueError(f"{index} holds no captions")
    ranks = {}
    for caption, rows in owners.items():
        ranked = [hit.row for hit in searcher.search(caption, videos).hits]
        ranks[caption] = 1 + min(ranked.index(row) for row in rows)
    query = next((caption for caption, rank in ranks.items() if rank == 1), next(iter(ranks)))
    return ExampleSearch(query, ranks[query], sum(rank == 1 for rank in ranks.values()), len(ranks), videos)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", default="demo_out")
    parser.add_argument("--num-videos", type=int, default=64)
    parser.add_argument("--steps", type=int, default=120, help="training steps")
    args = parser.parse_args(argv)
    data = os.path.join(args.out, "data")
    shards = os.path.join(args.out, "shards")

    step(f"generating {args.num_videos} sample videos (+5 broken inputs) in {data}")
    make_sample_data(data, num_videos=args.num_videos)

    step("building shards: train split")
    build(os.path.join(data, "train.jsonl"), os.path.join(data, "videos"), os.path.join(shards, "train"))
    step("building shards: test split")
    build(os.path.join(data, "test.jsonl"), os.path.join(data, "videos"), os.path.join(shards, "test"))

    if os.path.isdir(MSRVTT_SAMPLE):
        step("building shards: real MSR-VTT 1k-A test clips present in ../shared/data")
        build(os.path.join(MSRVTT_SAMPLE, "MSRVTT_JSFUSION_test.csv"), os.path.join(MSRVTT_SAMPLE, "videos"),
              os.path.join(shards, "msrvtt_test"), "--ignore-missing")  # fmt: skip

    step("inspecting the test shards (contact sheet of sample 0)")
    sheet = os.path.join(args.out, "contact_sheet.png")
    if inspect_main([os.path.join(shards, "test"), "--contact-sheet", sheet]) != 0:
        sys.exit("demo: shard inspection found problems")
    step(f"training: tiny-ViT, seqTransf, {args.steps} steps of batch 16 on CPU (output in {args.out}/run)")
    run = os.path.join(args.out, "run")
    code = train_main(["--train-shards", os.path.join(shards, "train"), "--val-shards", os.path.join(shards, "test"), "--output-dir", run,
                       "--model", "tiny-ViT", "--sim-header", "seqTransf", "--batch-size", "16", "--steps-per-epoch", str(args.steps),
                       "--epochs", "1", "--lr", "1e-3", "--eval-every-steps", "40",
                       "--log-every-steps", "10", "--max-frames", "12"])  # fmt: skip
    if code != 0:
        sys.exit(f"demo: training failed with exit code {code}")

    step("evaluating the final checkpoint on the test split")
    if eval_main(["--checkpoint", run, "--shards", os.path.join(shards, "test"), "--out", os.path.join(args.out, "eval")]) != 0:
        sys.exit("demo: evaluation failed")
    print(f"report: {os.path.join(args.out, 'eval', 'report.html')}   curves: {os.path.join(run, 'curves.png')}")
    real = os.path.join(shards, "msrvtt_test")
    if os.path.isfile(os.path.join(real, "manifest.json")):
        step("the same model on the real MSR-VTT clips: the whole path runs on real video, and a model trained minutes on shapes "
             "is near chance there (paper numbers need CLIP's weights: README, Reproducing a published number)")  # fmt: skip
        if eval_main(["--checkpoint", run, "--shards", real]) != 0:
            sys.exit("demo: evaluation on the real clips failed")

    index = os.path.join(args.out, "index")
    step(f"indexing the test split for search ({index})")
    if index_main(["--checkpoint", run, "--shards", os.path.join(shards, "test"), "--out", index]) != 0:
        sys.exit("demo: indexing failed")
    step("an example search over the index")
    example = example_query(index)
    if search_main(["--index", index, example.query, "-k", "5"]) != 0:
        sys.exit("demo: search failed")
    print(f"the video this caption describes ranks {example.rank} of {example.videos} (chance: mean rank {(example.videos + 1) / 2:.1f}, "
          f"first with probability 1/{example.videos}); {example.captions_ranked_first} of the index's {example.captions} distinct "
          f"captions rank their own video first{'' if example.rank == 1 else ': none does, so this example is a miss'}")
    print(f"search page: python -m search.serve --index {index}   (then open http://127.0.0.1:8000/)")


if __name__ == "__main__":
    main()
