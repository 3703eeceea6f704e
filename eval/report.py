"""A page a person can check: sampled text queries with their top-5 videos as frame strips.

The page is a single self-contained HTML file (thumbnails inlined as base64 JPEG) so it can
be copied off a cluster or opened from a bucket; the ground-truth video is outlined green.
"""

from __future__ import annotations

import base64
import html
import io
import random

import numpy as np
import torch

from eval.encode import EncodedSplit
from eval.metrics import ScoreBlock
from shards.reader import ReadErrors, iter_samples
from shards.thumbnails import frame_strip_jpeg


def pick_queries(num_captions: int, count: int, seed: int) -> list[int]:
    rows = list(range(num_captions))
    random.Random(seed).shuffle(rows)
    return sorted(rows[:count])


def top_videos(text_block: ScoreBlock, rows: list[int], k: int) -> dict[int, list[tuple[int, float]]]:
    result = {}
    for row in rows:
        scores = text_block(row, row + 1)[0].float().cpu()
        values, indices = torch.topk(scores, min(k, scores.numel()))
        result[row] = list(zip(indices.tolist(), values.tolist(), strict=True))
    return result


def frame_strips(urls: list[str], keys: set[str], frames_per_strip: int = 4, height: int = 72) -> dict[str, str]:
    """key -> base64 JPEG of ``frames_per_strip`` evenly spaced frames side by side."""
    return {sample["__key__"]: base64.b64encode(frame_strip_jpeg(sample, frames_per_strip, height)).decode("ascii")
            for sample in iter_samples(urls, ReadErrors().handler) if sample["__key__"] in keys}  # fmt: skip


def render_report(histogram_png: bytes, split: EncodedSplit, text_block: ScoreBlock, t2v_ranks: np.ndarray, urls: list[str], metrics: dict,
                  title: str, num_queries: int = 12, seed: int = 0) -> str:  # fmt: skip
    """The whole page as one string, every image inlined (it survives being copied alone)."""
    rows = pick_queries(len(split.captions), num_queries, seed)
    tops = top_videos(text_block, rows, 5)
    needed = {split.keys[v] for hits in tops.values() for v, _ in hits} | {split.keys[int(split.caption_to_video[r])] for r in rows}
    strips = frame_strips(urls, needed)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>",
        "body{font-family:system-ui,sans-serif;margin:24px;color:#222} table{border-collapse:collapse}",
        "td{vertical-align:top;padding:6px;border-bottom:1px solid #ddd} .hit{display:inline-block;margin:0 8px 4px 0;text-align:center;font-size:12px}",
        ".hit img,.missed img{display:block;border:3px solid transparent} .gt img{border-color:#1a7f37} .gt{font-weight:bold;color:#1a7f37}",
        ".missed{display:inline-block;margin:0 8px 4px 0;text-align:center;font-size:12px;color:#1a7f37}",
        ".metrics td,.metrics th{padding:4px 10px;border:1px solid #ccc}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<table class='metrics'><tr><th></th><th>R@1</th><th>R@5</th><th>R@10</th><th>MdR</th><th>MnR</th><th>N</th></tr>",
    ]
    for name, values in metrics.items():
        parts.append(
            f"<tr><th>{html.escape(name)}</th>"
            + "".join(f"<td>{values[k]:.1f}</td>" for k in ("R1", "R5", "R10", "MdR", "MnR"))
            + f"<td>{values['N']}</td></tr>"
        )
    parts.append("</table><h2>Sampled text queries: top 5 videos (ground truth outlined green)</h2><table>")
    for row in rows:
        truth = int(split.caption_to_video[row])
        parts.append(f"<tr><td style='width:260px'><b>{html.escape(split.captions[row])}</b><br>ground truth: {html.escape(split.keys[truth])}"
                     f"<br>rank of ground truth: {int(t2v_ranks[row]) + 1}</td><td>")  # fmt: skip
        if truth not in {video for video, _ in tops[row]}:  # the ground truth's own frames, when it missed the top 5
            key = split.keys[truth]
            image = (
                f"<img src='data:image/jpeg;base64,{strips[key]}' alt='{html.escape(key)}'>"
                if key in strips
                else "<i>frames unavailable</i>"
            )
            parts.append(f"<div class='missed gt'>{image}ground truth at #{int(t2v_ranks[row]) + 1}</div><br>")
        for position, (video, score) in enumerate(tops[row], start=1):
            key = split.keys[video]
            image = (
                f"<img src='data:image/jpeg;base64,{strips[key]}' alt='{html.escape(key)}'>"
                if key in strips
                else "<i>frames unavailable</i>"
            )
            css = "hit gt" if video == truth else "hit"
            parts.append(f"<div class='{css}'>{image}#{position} {html.escape(key)} ({score:.3f})</div>")
        parts.append("</td></tr>")
    histogram = base64.b64encode(histogram_png).decode("ascii")
    parts.append(f"</table><h2>Rank histogram</h2><img src='data:image/png;base64,{histogram}' alt='rank histogram'></body></html>")
    return "\n".join(parts)


def rank_histogram_png(ranks: dict[str, np.ndarray]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(ranks), figsize=(5 * len(ranks), 3.5), squeeze=False)
    for axis, (name, values) in zip(axes[0], ranks.items(), strict=True):
        top = max(int(values.max()) + 2, 2) if len(values) else 2
        bins = np.unique(np.round(np.geomspace(1, top, 30)).astype(int))
        axis.hist(np.asarray(values) + 1, bins=bins)
        axis.set_xscale("log")
        axis.set(title=f"{name}: rank of the ground truth", xlabel="rank (1 = best)", ylabel="queries")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
