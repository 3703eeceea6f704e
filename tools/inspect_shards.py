"""Look inside a shard build: counts per shard, one sample's metadata, a contact sheet.

    python -m tools.inspect_shards URL [--sample 0] [--contact-sheet frames.png] [--no-scan]

URL is a build folder or s3:// prefix (read through its manifest), a brace pattern
(``out/shard-{000000..000003}.tar``) or a single tar. The scan reads every shard, so it
also proves they are readable: truncated or unreadable shards and incomplete samples are
listed, and the exit status is 1 when there are any.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter

from PIL import Image

from runtime.cli import HelpFormatter
from shards.manifest import MANIFEST_NAME, read_manifest
from shards.sample_format import frame_members, is_complete_sample, sample_metadata
from shards.storage import Store


def contact_sheet(sample: dict, columns: int = 6, thumb_height: int = 112) -> Image.Image:
    """The sample's frames in time order on a grid, each labelled by its timestamp."""
    from PIL import ImageDraw

    frames = [Image.open(io.BytesIO(sample[name])).convert("RGB") for name in frame_members(sample)]
    timestamps = sample_metadata(sample)["frames"]["timestamps_s"]
    thumbs = [f.resize((max(1, round(f.width * thumb_height / f.height)), thumb_height)) for f in frames]
    cell_w = max(t.width for t in thumbs)
    rows = (len(thumbs) + columns - 1) // columns
    sheet = Image.new("RGB", (cell_w * min(columns, len(thumbs)), (thumb_height + 14) * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (thumb, ts) in enumerate(zip(thumbs, timestamps, strict=True)):
        x, y = (i % columns) * cell_w, (i // columns) * (thumb_height + 14)
        sheet.paste(thumb, (x, y))
        draw.text((x + 2, y + thumb_height + 1), f"#{i} t={ts:g}s", fill="black")
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.inspect_shards", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("--sample", type=int, default=0, help="index of the sample to show")
    parser.add_argument("--contact-sheet", help="write the shown sample's frames to this PNG")
    parser.add_argument("--no-scan", action="store_true", help="print the manifest only; read no shard")
    args = parser.parse_args(argv)
    from shards.reader import ReadErrors, ShardReadError, iter_samples, shard_urls  # webdataset (and torch): after the options

    try:
        urls = shard_urls(args.url)
        if not args.url.endswith(".tar") and "{" not in args.url and Store(args.url).exists(MANIFEST_NAME):
            manifest = read_manifest(Store(args.url))
            summary = {k: v for k, v in manifest.items() if k not in ("shards", "settings")}
            print("manifest:", json.dumps(summary, sort_keys=True))
            print("settings:", json.dumps(manifest["settings"], sort_keys=True))
    except (ShardReadError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.no_scan:
        return 0
    errors = ReadErrors()
    per_shard: Counter[str] = Counter()
    incomplete: list[str] = []
    shown = None
    for sample in iter_samples(urls, errors.handler):
        if not is_complete_sample(sample):
            incomplete.append(f"{sample['__url__']}:{sample['__key__']}")
            continue
        if per_shard.total() == args.sample:
            shown = sample
        per_shard[sample["__url__"]] += 1
    for url in urls:
        print(f"{per_shard[url]:6d}  {url}")
    print(f"{per_shard.total()} samples in {len(urls)} shards")
    for url, reason in errors.errors:
        print(f"unreadable: {url}: {reason}")
    for where in incomplete:
        print(f"incomplete sample skipped: {where}")
    if shown is not None:
        meta = sample_metadata(shown)
        print(f"sample {args.sample}: key={shown['__key__']} members={sorted(k for k in shown if not k.startswith('__'))}")
        print(json.dumps(meta, indent=1, ensure_ascii=False))
        if args.contact_sheet:
            contact_sheet(shown).save(args.contact_sheet)
            print(f"contact sheet: {args.contact_sheet}")
    return 1 if errors.errors or incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
