"""Metrics against independent references, hand-checked cases, ties, blocks and the CLI."""

import json

import numpy as np
import pytest
import torch

from eval.metrics import main as metrics_main
from eval.metrics import metrics_from_matrix, summarize, v2t_ranks


def reference_ranks(sim: np.ndarray) -> np.ndarray:
    """CLIP4Clip's compute_metrics rank, re-derived with argsort (valid without ties)."""
    order = np.argsort(-sim, axis=1, kind="stable")
    return np.array([int(np.where(order[i] == i)[0][0]) for i in range(sim.shape[0])])


def reference_summary(ranks: np.ndarray) -> dict:
    return {
        "R1": 100 * np.sum(ranks == 0) / len(ranks),
        "R5": 100 * np.sum(ranks < 5) / len(ranks),
        "R10": 100 * np.sum(ranks < 10) / len(ranks),
        "MdR": float(np.median(ranks)) + 1,
        "MnR": float(np.mean(ranks)) + 1,
    }


@pytest.mark.parametrize("n", [1, 2, 7, 100, 333])
def test_square_matrix_matches_reference_both_directions(n):
    sim = np.random.default_rng(n).normal(size=(n, n))
    result = metrics_from_matrix(sim, block_size=17)
    for direction, matrix in (("t2v", sim), ("v2t", sim.T)):
        expected = reference_summary(reference_ranks(matrix))
        for key, value in expected.items():
            assert result[direction][key] == pytest.approx(value), (direction, key)
        assert result[direction]["N"] == n


def test_hand_checked_example():
    sim = np.array(
        [
            [0.9, 0.1, 0.2],  # truth first: rank 0
            [0.8, 0.5, 0.1],  # truth second: rank 1
            [0.7, 0.6, 0.3],  # truth last: rank 2
        ]
    )
    t2v = metrics_from_matrix(sim)["t2v"]
    assert t2v == {"R1": pytest.approx(100 / 3), "R5": 100.0, "R10": 100.0, "MdR": 2.0, "MnR": 2.0, "N": 3}
    # an even count averages the two middle ranks, as numpy's median does
    assert summarize(np.array([0, 1, 2, 5]))["MdR"] == 2.5


def test_ties_resolve_in_favour_of_the_ground_truth():
    sim = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.1], [0.9, 0.2, 0.2]])
    t2v = metrics_from_matrix(sim)["t2v"]
    # row 0: nothing strictly higher -> 0; row 1: nothing strictly higher -> 0; row 2: 0.9 > 0.2 -> 1
    assert t2v["R1"] == pytest.approx(200 / 3) and t2v["MnR"] == pytest.approx(1 + 1 / 3)
    # all-equal rows (a collapsed model) count as perfect under this rule: documented, and tested
    assert metrics_from_matrix(np.zeros((4, 4)))["t2v"]["R1"] == 100.0


def test_quantised_ties_agree_with_strictly_greater_count():
    rng = np.random.default_rng(3)
    sim = np.round(rng.normal(size=(200, 200)), 1)  # many ties
    expected = (sim > np.diag(sim)[:, None]).sum(1)
    result = metrics_from_matrix(sim, block_size=64)["t2v"]
    assert result["MnR"] == pytest.approx(expected.mean() + 1)
    assert result["R1"] == pytest.approx(100 * np.mean(expected == 0))


def reference_multi_caption(sim: np.ndarray, caption_to_video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CLIP4Clip's multi-sentence procedure: -inf padded (videos, max captions, videos) tensor."""
    num_videos = sim.shape[1]
    counts = np.bincount(caption_to_video, minlength=num_videos)
    padded = np.full((num_videos, counts.max(), num_videos), -np.inf)
    fill = np.zeros(num_videos, dtype=int)
    for row, video in enumerate(caption_to_video):
        padded[video, fill[video]] = sim[row]
        fill[video] += 1
    t2v = np.array([(sim[r] > sim[r, v]).sum() for r, v in enumerate(caption_to_video)])
    best = padded.max(axis=1)  # (videos of captions, videos): best caption per video pair
    video_to_text = best.T  # rows: query video, columns: caption groups
    v2t = reference_ranks(video_to_text)
    return t2v, v2t


def test_multi_caption_matches_padded_reference():
    rng = np.random.default_rng(5)
    caption_to_video = np.repeat(np.arange(30), rng.integers(1, 6, size=30))
    rng.shuffle(caption_to_video)
    sim = rng.normal(size=(len(caption_to_video), 30))
    t2v, v2t = reference_multi_caption(sim, caption_to_video)
    result = metrics_from_matrix(sim, caption_to_video, block_size=7)
    assert result["t2v"]["N"] == len(caption_to_video) and result["v2t"]["N"] == 30
    for key, value in reference_summary(t2v).items():
        assert result["t2v"][key] == pytest.approx(value)
    for key, value in reference_summary(v2t).items():
        assert result["v2t"][key] == pytest.approx(value)


def test_block_size_does_not_change_ranks():
    rng = np.random.default_rng(9)
    caption_to_video = torch.tensor(np.repeat(np.arange(50), 3))
    sim = torch.tensor(rng.normal(size=(150, 50)))
    dense = v2t_ranks(lambda a, b: sim[:, a:b].T, caption_to_video, 50, block_size=50)
    for block in (1, 3, 49):
        assert (v2t_ranks(lambda a, b: sim[:, a:b].T, caption_to_video, 50, block_size=block) == dense).all()


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="caption-to-video"):
        metrics_from_matrix(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="outside"):
        metrics_from_matrix(np.zeros((2, 2)), np.array([0, 5]))
    with pytest.raises(ValueError, match="no caption"):
        metrics_from_matrix(np.zeros((2, 3)), np.array([0, 1]))


def test_cli_prints_one_json_object(tmp_path, capsys):
    sim = np.random.default_rng(1).normal(size=(20, 10))
    mapping = np.repeat(np.arange(10), 2)
    np.save(tmp_path / "sim.npy", sim)
    np.save(tmp_path / "idx.npy", mapping)
    assert metrics_main([str(tmp_path / "sim.npy"), "--caption-to-video", str(tmp_path / "idx.npy")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"t2v", "v2t"}
    assert set(printed["t2v"]) == {"R1", "R5", "R10", "MdR", "MnR", "N"}
    assert printed == json.loads(json.dumps(metrics_from_matrix(sim, mapping)))
    assert metrics_main([str(tmp_path / "missing.npy")]) == 2
    assert "missing.npy" in capsys.readouterr().err
