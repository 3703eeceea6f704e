"""The README's first command: the whole product on embedded sample data, end to end.

    python -m tools.demo [--out demo_out]

1. generates the moving-shapes video set (tools.make_sample_data), with broken inputs;
2. builds train and test shards from it (python -m pipeline build), and shards of the
   real MSR-VTT test sample that sits beside the repository (../shared/data), if present;
3. inspects the shards and prints the manifest summaries and failures;
4. trains a tiny CLIP4Clip (seqTransf head, random init: no weights can be downloaded) on the
   train shards for a few minutes of CPU, evaluating on the test split every 40 steps;
5. evaluates the final checkpoint (python -m eval) and prints R@1/5/10, MdR, MnR both ways,
   with report.html and rank_histogram.png in OUT/eval;
6. indexes the test split (python -m search.index) and prints one example search over it
   (python -m search), with the command that serves the search page.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from eval.__main__ import main as eval_main
from pipeline.__main__ import main as pipeline_main
from search.cli import main as search_main
from search.index import main as index_main
from tools.inspect_shards import main as inspect_main
from tools.make_sample_data import make_sample_data
from train.__main__ import main as train_main

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_QUERY = "a red circle moves from left to right"  # the generated clips' own kind of caption
MSRVTT_SAMPLE = os.path.join(REPO_ROOT, "..", "shared", "data", "msrvtt_test_sample")


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def build(annotations: str, videos: str, out: str, *extra: str) -> None:
    code = pipeline_main(["build", "--annotations", annotations, "--videos", videos, "--out", out, "--samples-per-shard", "16", *extra])
    if code != 0:
        sys.exit(f"demo: build of {annotations} failed with exit code {code}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    with open(os.path.join(shards, "train", "failures.jsonl")) as handle:
        failures = [json.loads(line) for line in handle]
    print(f"recorded failures ({len(failures)}):")
    for failure in failures:
        print(f"  {failure['video_id']}: {failure['error'].splitlines()[0]}")

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
                       "--epochs", "1", "--lr", "1e-3", "--coef-lr", "1", "--workers", "2", "--eval-every-steps", "40",
                       "--log-every-steps", "10", "--max-frames", "12"])  # fmt: skip
    if code != 0:
        sys.exit(f"demo: training failed with exit code {code}")

    step("evaluating the final checkpoint on the test split")
    if eval_main(["--checkpoint", run, "--shards", os.path.join(shards, "test"), "--out", os.path.join(args.out, "eval")]) != 0:
        sys.exit("demo: evaluation failed")
    with open(os.path.join(args.out, "eval", "metrics.json")) as handle:
        metrics = json.load(handle)
    print(f"\n{'':6}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MdR':>7}{'MnR':>7}{'N':>6}")
    for direction in ("t2v", "v2t"):
        m = metrics["raw"][direction]
        print(f"{direction:6}{m['R1']:7.1f}{m['R5']:7.1f}{m['R10']:7.1f}{m['MdR']:7.1f}{m['MnR']:7.1f}{m['N']:6d}")
    print(f"chance for {metrics['num_videos']} videos: R@1 {100 / metrics['num_videos']:.1f}, MnR {(metrics['num_videos'] + 1) / 2:.1f}")
    print(f"report: {os.path.join(args.out, 'eval', 'report.html')}   curves: {os.path.join(run, 'curves.png')}")

    index = os.path.join(args.out, "index")
    step(f"indexing the test split for search ({index})")
    if index_main(["--checkpoint", run, "--shards", os.path.join(shards, "test"), "--out", index]) != 0:
        sys.exit("demo: indexing failed")
    step("an example search over the index")
    if search_main(["--index", index, EXAMPLE_QUERY, "-k", "5"]) != 0:
        sys.exit("demo: search failed")
    print(f"search page: python -m search.serve --index {index}   (then open http://127.0.0.1:8000/)")


if __name__ == "__main__":
    main()
