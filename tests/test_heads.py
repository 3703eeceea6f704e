"""Similarity heads: masks on short clips, and the temporal-order task only sequence heads solve."""

import copy

import pytest
import torch
import torch.nn.functional as F

from eval.metrics import metrics_from_matrix
from model.backbone import load_clip
from model.config import HEADS
from model.features import TextFeatures, VideoFeatures
from tests.models import clip4clip
from train.loss import symmetric_cross_entropy


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return load_clip("tiny-ViT-112", None)


@pytest.mark.parametrize("head", HEADS)
def test_padded_frames_never_change_the_result(tiny_clip, head):
    model = clip4clip(copy.deepcopy(tiny_clip), head, max_frames=6).eval()
    torch.manual_seed(1)
    frames = torch.randn(3, 6, 64)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    text = TextFeatures(F.normalize(torch.randn(2, 64), dim=-1))
    pooled = model.pool(frames, mask)[1] if model.pool is not None else None
    scores = model.logits(text, VideoFeatures(frames, mask, pooled))
    altered = frames.clone()
    altered[~mask] = torch.randn(int((~mask).sum()), 64) * 100
    pooled_altered = model.pool(altered, mask)[1] if model.pool is not None else None
    assert torch.allclose(scores, model.logits(text, VideoFeatures(altered, mask, pooled_altered)), atol=1e-5)
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()
    if model.pool is not None:
        assert torch.allclose(pooled.norm(dim=-1), torch.ones(3), atol=1e-5)


def direction_task(seed: int, noise: float = 0.05):
    """8 trajectories x 2 directions; a clip is its 6 position codes in order or reversed.

    Reversing a clip leaves the set of frames, hence any order-blind pooling, unchanged."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randn(8, 6, 64, generator=torch.Generator().manual_seed(123))
    clips = torch.cat([codes, codes.flip(1)])  # 0..7 forward, 8..15 backward
    return clips + noise * torch.randn(clips.shape, generator=generator)


def train_on_direction(tiny_clip, head: str, steps: int = 250) -> float:
    torch.manual_seed(0)
    model = clip4clip(copy.deepcopy(tiny_clip), head, max_frames=6)
    trajectory, direction = torch.nn.Embedding(8, 64), torch.nn.Embedding(2, 64)  # caption = trajectory + direction
    new_modules = [p for name, p in model.named_parameters() if not name.startswith("clip.")]  # head and similarity
    parameters = [*new_modules, *trajectory.parameters(), *direction.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    ids = torch.arange(16)
    mask = torch.ones(16, 6, dtype=torch.bool)

    def scores(frames: torch.Tensor) -> torch.Tensor:
        text = F.normalize(trajectory(ids % 8) + direction(ids // 8), dim=-1)
        video = F.normalize(model.pool(frames, mask)[1], dim=-1)
        return 20.0 * text @ video.T

    for step in range(steps):
        loss = symmetric_cross_entropy(scores(direction_task(seed=step)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        held_out = scores(direction_task(seed=10_000))  # fresh noise: nothing memorised carries over
    return metrics_from_matrix(held_out.numpy())["t2v"]["R1"]


@pytest.mark.integration  # hundreds of optimisation steps
def test_sequence_heads_learn_direction_that_mean_pooling_cannot_see(tiny_clip):
    mean_pooling = train_on_direction(tiny_clip, "meanP")
    transformer = train_on_direction(tiny_clip, "seqTransf")
    lstm = train_on_direction(tiny_clip, "seqLSTM")
    assert mean_pooling <= 75.0  # reversed pairs look alike: about half of the queries miss
    assert transformer >= 93.75 and lstm >= 93.75
    assert transformer - mean_pooling >= 25.0
