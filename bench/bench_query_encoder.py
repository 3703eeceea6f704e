"""The query's text encoding on CPU, side by side in one run: the encoder search used before (every
query padded to 32 tokens, fp32), padding trimmed (exact), and dynamic int8 (search/query_encoder.py);
then, on an index, whether the fast path keeps the ranking; and a query by video, decode included.

    python -m tools.demo --out demo_out                      # the demo's index (its captions are the check)
    python -m bench.bench_query_encoder --index demo_out/index [--video clip.mp4] [--out bench_out/query_encoder.json]

1. Speed: ViT-B/32's text tower (open_clip's architecture, random weights: none can be downloaded here;
   the cost does not depend on the weights) in a meanP model, one query at a time, on MSR-VTT's real
   test captions (../shared/data/msrvtt_test_sample, so the lengths are real), torch on every core.
   Median milliseconds per query and the ratio to the old path; the int8 vectors' least cosine to fp32.
2. Ranking: on ``--index``, every caption of the index searched with fp32 and with int8; the share
   whose top 10 is identical and the least cosine (what ``--query-encoder auto`` checks at start-up).
3. Query by video on ``--index``: a video file decoded with the index's build settings and encoded by
   its model, milliseconds per query (decode, encode, search), median of several.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import time

import numpy as np
import torch

from runtime.cli import HelpFormatter

SAMPLE_CAPTIONS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "msrvtt_test_sample", "MSRVTT_JSFUSION_test.csv")
FALLBACK_CAPTIONS = ["a man is cooking pasta in a small kitchen", "a girl does gymnastics", "cars race on a track at night",
                     "a person explains how to fix a computer", "two dogs play in the snow"]  # fmt: skip


def captions() -> list[str]:
    if not os.path.isfile(SAMPLE_CAPTIONS):
        return FALLBACK_CAPTIONS
    with open(SAMPLE_CAPTIONS, newline="", encoding="utf-8") as handle:
        return [row["sentence"] for row in csv.DictReader(handle)]


def vit_b32_meanp() -> torch.nn.Module:
    from model import backbone
    from model.clip4clip import CLIP4Clip

    clip = backbone.load_clip("ViT-B-32", None)
    return CLIP4Clip(clip, "meanP", max_frames=12).eval()


def median_ms(function, items: list, repeats: int = 1) -> float:  # noqa: ANN001
    function(items[0])  # warm-up
    times = []
    for _ in range(repeats):
        for item in items:
            start = time.perf_counter()
            function(item)
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def speed(texts: list[str]) -> dict:
    from model import backbone
    from search.query_encoder import QueryEncoder

    model = vit_b32_meanp()
    tokenize = backbone.tokenizer_for("ViT-B-32")
    tokens = [tokenize([text], context_length=32) for text in texts]
    untrimmed = QueryEncoder(model, "fp32")
    untrimmed.trim = False  # the encoder search used before this change
    encoders = {"fp32, padded to 32 tokens (before)": untrimmed, "fp32, padding trimmed (exact)": QueryEncoder(model, "fp32"),
                "int8, padding trimmed": QueryEncoder(model, "int8")}  # fmt: skip
    idle = contextlib.nullcontext
    with torch.no_grad():
        reference = torch.cat([untrimmed(t, idle).pooled for t in tokens])
        rows = {}
        for name, encoder in encoders.items():
            ms = median_ms(lambda t, e=encoder: e(t, idle), tokens, repeats=3)
            vectors = torch.cat([encoder(t, idle).pooled for t in tokens])
            cosine = float(torch.nn.functional.cosine_similarity(reference, vectors, dim=1).min())
            rows[name] = {"ms_median": ms, "min_cosine_to_before": cosine}
    base = rows["fp32, padded to 32 tokens (before)"]["ms_median"]
    for row in rows.values():
        row["speedup"] = base / row["ms_median"]
    lengths = [int(t.argmax()) + 1 for t in tokens]
    return {"model": "ViT-B-32 text tower (random weights), meanP", "queries": len(texts), "median_tokens": statistics.median(lengths),
            "torch_threads": torch.get_num_threads(), "encoders": rows}  # fmt: skip


def ranking(index_url: str) -> dict:
    from search.searcher import agreement_in_index, open_searcher

    searcher = open_searcher(index_url, query_encoder="fp32")
    texts = sorted({c for row in range(len(searcher.index)) for c in searcher.index.record(row)["captions"]})
    from search.query_encoder import QueryEncoder

    fast = QueryEncoder(searcher.model, "int8")
    with torch.no_grad():
        vectors = {name: searcher.model.coarse_text_vector(searcher._encode(texts, encoder).pooled).float()
                   for name, encoder in (("fp32", searcher.encoder), ("int8", fast))}  # fmt: skip
    check = agreement_in_index(vectors["fp32"], vectors["int8"], lambda v: searcher._coarse(v, min(10, len(searcher.index))))
    return {"index": index_url, "videos": len(searcher.index), **check,
            "auto_chooses": open_searcher(index_url, query_encoder="auto").encoder_check}  # fmt: skip


def video_query(index_url: str, video: str | None) -> dict:
    from search.media_query import search_media_file
    from search.searcher import open_searcher

    searcher = open_searcher(index_url)
    if video is None:  # the first indexed row's source file, where the demo's videos still are
        record = searcher.index.record(0)
        build = (searcher.index.manifest.get("build_settings") or {})
        video = os.path.join(os.path.dirname(index_url.rstrip("/")), "data", "videos", record["source_file"]) if record["source_file"] else None
        if video is None or not os.path.isfile(video):
            return {"skipped": f"no video to query with (give --video); build settings {build}"}
    results = [search_media_file(searcher, video, 10) for _ in range(6)][1:]  # the first warms up
    parts = {name: statistics.median(r.milliseconds[name] for r in results) for name in ("decode", "encode", "coarse", "total")}
    return {"video": video, "frames_note": results[0].note, "ms_median": parts, "vit_b32_encode_ms_median": vit_b32_video_ms(video)}


def vit_b32_video_ms(video: str) -> dict:
    """What the same query costs with ViT-B/32 (random weights) at 224 px and 12 frames: decode at the
    builder's defaults, then the image tower on every frame and meanP."""
    from model.clip_decode import decode_clip
    from pipeline.extract import ExtractionSettings, extract_video
    from shards.sample_format import frame_member

    model = vit_b32_meanp()
    times = {"decode": [], "encode": []}
    for _ in range(4):
        start = time.perf_counter()
        extracted = extract_video(video, ExtractionSettings())
        frames, mask = decode_clip({frame_member(i): f for i, f in enumerate(extracted.frames_jpeg)}, 12, 224)
        decoded = time.perf_counter()
        with torch.no_grad():
            model.coarse_video_vector(model.encode_video(frames[None], mask[None]))
        times["decode"].append(1e3 * (decoded - start))
        times["encode"].append(1e3 * (time.perf_counter() - decoded))
    return {"frames": int(mask.sum()), **{name: statistics.median(values[1:]) for name, values in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter, description=__doc__)
    parser.add_argument("--index", help="an index to check the ranking on and to query by video (the demo's: demo_out/index)")
    parser.add_argument("--video", help="the video file to query by (default: the index's first row's, under the demo's data/videos)")
    parser.add_argument("--out", default="bench_out/query_encoder.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    result = {"cores": os.cpu_count(), "speed": speed(captions())}
    print(json.dumps(result["speed"], indent=1), flush=True)
    if args.index:
        result["ranking"] = ranking(args.index)
        print(json.dumps(result["ranking"], indent=1), flush=True)
        result["query_by_video"] = video_query(args.index, args.video)
        print(json.dumps(result["query_by_video"], indent=1), flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"\n{'encoder':40} {'ms/query':>9} {'x before':>9} {'min cos':>8}")
    for name, row in result["speed"]["encoders"].items():
        print(f"{name:40} {row['ms_median']:9.2f} {row['speedup']:9.2f} {row['min_cosine_to_before']:8.5f}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
