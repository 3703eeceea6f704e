"""The README's first command: the whole product on embedded sample data, end to end.

    python -m tools.demo [--out demo_out]

1. generates the moving-shapes video set (tools.make_sample_data), with broken inputs;
2. builds train and test shards from it (python -m pipeline build), and shards of the
   real MSR-VTT test sample that sits beside the repository (../shared/data), if present;
3. inspects the shards and prints the manifest summaries and failures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pipeline.__main__ import main as pipeline_main
from tools.inspect_shards import main as inspect_main
from tools.make_sample_data import make_sample_data

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    print("\ndone. Training and evaluation are not part of the demo yet (see README: status).")


if __name__ == "__main__":
    main()
