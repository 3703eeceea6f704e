"""The Similarity contract (model/similarity.py), checked for every kind the model can hold.

Whatever a similarity computes, its three ways of scoring must agree on the same features:
the training logits (without the temperature), a block of the split, and each query's own
candidates. A new similarity joins KINDS and inherits these checks.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from model.backbone import load_clip
from model.clip4clip import CLIP4Clip, migrate_legacy_keys
from model.emcl import EMCLNet
from model.features import TextFeatures, VideoFeatures
from model.heads import CrossEncoderScore
from model.interaction import TokenInteraction
from model.similarity import PooledCosine, ScoringChunks
from model.xpool import XPoolSimilarity
from tests.models import clip4clip

KINDS = {  # (head, interaction, emcl[, more options]) -> the class the model must hold
    "cosine": (("seqTransf", "cosine", None), PooledCosine),
    "wti": (("seqTransf", "wti", None), TokenInteraction),
    "ti": (("meanP", "ti", None), TokenInteraction),
    "emcl": (("seqTransf", "cosine", {"bases": 8}), EMCLNet),
    "tightTransf": (("tightTransf", "cosine", None), CrossEncoderScore),
    "xpool": (("meanP", "cosine", None, {"xpool": True, "xpool_heads": 2}), XPoolSimilarity),
}


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return load_clip("tiny-ViT-112", None)


def features(model: CLIP4Clip, texts: int = 7, videos: int = 5, seed: int = 0) -> tuple[TextFeatures, VideoFeatures]:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(videos, 6, 64, generator=generator)
    mask = torch.ones(videos, 6, dtype=torch.bool)
    mask[::2, 4:] = False
    tokens = torch.randn(texts, 8, 64, generator=generator)
    token_mask = torch.arange(8)[None] < torch.randint(2, 9, (texts, 1), generator=generator)
    pooled_text = tokens[:, 0] if not model.similarity.normalises_text else F.normalize(tokens[:, 0], dim=-1)
    text = TextFeatures(pooled_text, tokens, token_mask) if model.similarity.keeps_text_tokens else TextFeatures(pooled_text)
    sequence, pooled = model.pool(frames, mask) if model.pool is not None else (frames, None)
    return text, VideoFeatures(sequence, mask, pooled)


@pytest.mark.parametrize("kind", KINDS)
def test_training_logits_blocks_and_candidates_agree(tiny_clip, kind):
    (head, interaction, emcl, *more), expected_class = KINDS[kind]
    model = clip4clip(copy.deepcopy(tiny_clip), head, 6, interaction, emcl, **(more[0] if more else {})).eval()
    assert type(model.similarity) is expected_class
    text, video = features(model)
    with torch.no_grad():
        scale = model.logit_scale()
        logits = model.similarity(text, video, scale).logits / (scale if model.similarity.uses_logit_scale else 1.0)
        pairs = model.similarity.pair_scorer(text, video, ScoringChunks(texts=3, videos=2))  # chunks smaller than the split
        assert torch.allclose(pairs.block(slice(0, 7), slice(0, 5)), logits, atol=1e-5)
        assert torch.allclose(pairs.block(slice(2, 7), slice(1, 5)), logits[2:, 1:], atol=1e-5)  # any rectangle, the same scores
        assert torch.allclose(pairs.block(slice(4, 5), slice(0, 5)), logits[4:5], atol=1e-5)  # one caption's row (the report)
        if kind == "emcl":
            return  # EMCL-Net's EM runs per block: a query's candidates form a block of their own (tests/test_emcl.py)
        video_candidates = torch.tensor([[4, 0], [1, 3], [2, 2]])
        expected = torch.stack([logits[0, [4, 0]], logits[3, [1, 3]], logits[6, [2, 2]]])
        assert torch.allclose(pairs.for_texts(torch.tensor([0, 3, 6]), video_candidates), expected, atol=1e-5)
        caption_candidates = torch.tensor([[6, 1, 0], [2, 5, 5]])
        expected = torch.stack([logits[[6, 1, 0], 4], logits[[2, 5, 5], 1]])
        assert torch.allclose(pairs.for_videos(torch.tensor([4, 1]), caption_candidates), expected, atol=1e-5)


@pytest.mark.parametrize("kind", ["wti", "emcl", "tightTransf"])
def test_checkpoints_from_before_the_similarity_interface_load_unchanged(tiny_clip, kind):
    """This project's older checkpoints kept the similarity's weights under interaction.*,
    emcl.* or cross.*; they load into model.similarity with identical scores."""
    (head, interaction, emcl), _ = KINDS[kind]
    torch.manual_seed(5)
    trained = clip4clip(copy.deepcopy(tiny_clip), head, 6, interaction, emcl).eval()
    with torch.no_grad():
        for parameter in trained.similarity.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
        for buffer in trained.similarity.buffers():
            buffer.add_(0.5)
    legacy = {"wti": "interaction.", "emcl": "emcl.", "tightTransf": "cross."}[kind]
    old_layout = {
        (legacy + k.removeprefix("similarity.") if k.startswith("similarity.") else k): v for k, v in trained.state_dict().items()
    }
    assert not any(k.startswith("similarity.") for k in old_layout) and any(k.startswith(legacy) for k in old_layout)
    assert migrate_legacy_keys(old_layout).keys() == trained.state_dict().keys()
    restored = clip4clip(copy.deepcopy(tiny_clip), head, 6, interaction, emcl).eval()
    restored.load_state_dict(old_layout)
    text, video = features(trained)
    with torch.no_grad():
        assert torch.equal(restored.logits(text, video), trained.logits(text, video))


def test_emcl_rectangles_off_the_grid_get_the_grids_scores(tiny_clip):
    """EMCL-Net runs EM per 32 x 32 block, so a pair's score depends on its block: any rectangle
    (one caption's row for the HTML report, a rerank window) must be cut from the grid's blocks,
    not EM'd on its own."""
    (head, interaction, emcl), _ = KINDS["emcl"]
    model = clip4clip(copy.deepcopy(tiny_clip), head, 6, interaction, emcl).eval()
    text, video = features(model, texts=70, videos=40, seed=3)
    with torch.no_grad():
        pairs = model.similarity.pair_scorer(text, video)
        grid = pairs.block(slice(0, 70), slice(0, 40))
        assert torch.allclose(pairs.block(slice(33, 35), slice(5, 38)), grid[33:35, 5:38], atol=1e-6)
        assert torch.allclose(pairs.block(slice(40, 41), slice(0, 40)), grid[40:41], atol=1e-6)
        alone = model.similarity.blockwise(text.pooled[33:35], video.frames[5:38], video.mask[5:38])
        assert not torch.allclose(alone, grid[33:35, 5:38], atol=1e-4)  # EM on the rectangle alone differs: the grid matters
