"""Retrieval metrics exactly as CLIP4Clip's ``compute_metrics`` defines them, computed in blocks.

For a similarity matrix with the ground truth of row i in column gt[i]:
rank = 0-based position of the ground truth in the row sorted descending;
R@k = 100 * mean(rank < k); MdR = numpy median(rank) + 1 (the two middle values averaged);
MnR = mean(rank) + 1.

Ties: rank = number of columns scoring strictly higher than the ground truth, i.e. ties
are resolved in the ground truth's favour. That is what CLIP4Clip's code computes (it takes
the first sorted position whose value equals the ground truth's score); without ties it is
the plain sorted position.

Scoring is blockwise: only a (block x N) slice of scores exists at a time, so memory is
bounded by the block size and 100k x 100k never materialises.

Multi-caption sets (MSVD, MSR-VTT full captions): every caption is a text query against
every video (t2v). For v2t, a video's score against video u's texts is its best score over
u's captions, and the usual ranks follow (CLIP4Clip's multi-sentence procedure), computed
per block with a scatter-max instead of CLIP4Clip's -inf padded 3-D tensor.

    python -m eval.metrics SIM.npy [--caption-to-video IDX.npy]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import numpy as np
import torch

from runtime.cli import HelpFormatter

ScoreBlock = Callable[[int, int], torch.Tensor]  # (start, stop) of query rows -> (rows, columns) scores


def summarize(ranks: np.ndarray) -> dict:
    ranks = np.asarray(ranks, dtype=np.float64)
    return {
        "R1": float(100.0 * np.mean(ranks < 1)),
        "R5": float(100.0 * np.mean(ranks < 5)),
        "R10": float(100.0 * np.mean(ranks < 10)),
        "MdR": float(np.median(ranks) + 1),
        "MnR": float(np.mean(ranks) + 1),
        "N": int(len(ranks)),
    }


def ranks_from_blocks(score_block: ScoreBlock, num_rows: int, ground_truth: torch.Tensor, block_size: int) -> np.ndarray:
    """0-based rank of each row's ground-truth column, one block of rows at a time."""
    ranks = []
    for start in range(0, num_rows, block_size):
        stop = min(start + block_size, num_rows)
        scores = score_block(start, stop)
        truth = ground_truth[start:stop].to(scores.device)
        target = scores.gather(1, truth[:, None])
        ranks.append((scores > target).sum(dim=1).cpu())
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def t2v_ranks(score_block: ScoreBlock, caption_to_video: torch.Tensor, block_size: int = 1024) -> np.ndarray:
    """Text queries (rows = captions) against all videos."""
    return ranks_from_blocks(score_block, len(caption_to_video), caption_to_video, block_size)


def v2t_ranks(video_score_block: ScoreBlock, caption_to_video: torch.Tensor, num_videos: int, block_size: int = 1024) -> np.ndarray:
    """Video queries. ``video_score_block(a, b)`` gives videos a..b against *all captions*;
    captions are reduced to their video by max, then the video's own column is the truth."""
    caption_to_video = caption_to_video.long()

    def per_video(start: int, stop: int) -> torch.Tensor:
        scores = video_score_block(start, stop)
        index = caption_to_video.to(scores.device)[None].expand(scores.shape[0], -1)
        reduced = torch.full((scores.shape[0], num_videos), float("-inf"), dtype=scores.dtype, device=scores.device)
        return reduced.scatter_reduce(1, index, scores, reduce="amax", include_self=True)

    return ranks_from_blocks(per_video, num_videos, torch.arange(num_videos), block_size)


def metrics_from_matrix(similarity: np.ndarray | torch.Tensor, caption_to_video: np.ndarray | None = None, block_size: int = 1024) -> dict:
    """Both directions for a (captions x videos) matrix; square with diagonal truth by default."""
    sim = torch.as_tensor(np.asarray(similarity) if not isinstance(similarity, torch.Tensor) else similarity)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be 2-D, got shape {tuple(sim.shape)}")
    num_captions, num_videos = sim.shape
    if caption_to_video is None:
        if num_captions != num_videos:
            raise ValueError(f"a {num_captions}x{num_videos} matrix needs --caption-to-video (which video each row belongs to)")
        mapping = torch.arange(num_captions)
    else:
        mapping = torch.as_tensor(np.asarray(caption_to_video)).long()
        if mapping.shape != (num_captions,):
            raise ValueError(f"caption-to-video has shape {tuple(mapping.shape)}, expected ({num_captions},)")
        if mapping.numel() and (mapping.min() < 0 or mapping.max() >= num_videos):
            raise ValueError(f"caption-to-video holds indices outside [0, {num_videos})")
        if torch.unique(mapping).numel() != num_videos:
            raise ValueError("some video has no caption; v2t is undefined for it")
    t2v = t2v_ranks(lambda a, b: sim[a:b], mapping, block_size)
    v2t = v2t_ranks(lambda a, b: sim[:, a:b].T, mapping, num_videos, block_size)
    return {"t2v": summarize(t2v), "v2t": summarize(v2t)}


def _load_array(path: str) -> np.ndarray:
    """A plain numeric .npy (pickled object arrays are refused: loading them could run code)."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a numeric .npy array ({error})") from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m eval.metrics", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("similarity", help=".npy matrix, rows = text queries, columns = videos")
    parser.add_argument("--caption-to-video", help=".npy int array: the video column of each row (multi-caption sets)")
    parser.add_argument("--block-size", type=int, default=1024)
    args = parser.parse_args(argv)
    try:
        similarity = _load_array(args.similarity)
        mapping = _load_array(args.caption_to_video) if args.caption_to_video else None
        result = metrics_from_matrix(similarity, mapping, args.block_size)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
