"""DRL (WTI/TI + CDCR), EMCL, EERCF reranking and PEFT: shapes, masks and exactness, no training loop."""

import copy

import pytest
import torch
import torch.nn.functional as F

from eval.encode import EncodedSplit
from eval.metrics import t2v_ranks, v2t_ranks
from eval.rerank import compare_coarse_to_fine, two_stage_blocks
from eval.scoring import SplitScorer, score_blocks
from model.backbone import load_clip
from model.clip4clip import CLIP4Clip
from model.features import TextFeatures, TokenSet, VideoFeatures
from model.interaction import TokenInteraction, all_pairs, paired
from model.peft import add_lora, add_visual_prompts, count_parameters, freeze_clip, trainable_state
from tests.models import clip4clip


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return load_clip("tiny-ViT-112", None)


def short_clips_and_captions(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(3, 6, 64, generator=generator)
    frame_mask = torch.tensor([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1] * 6], dtype=torch.bool)  # clips shorter than max frames
    tokens = torch.randn(4, 10, 64, generator=generator)
    lengths = torch.tensor([3, 10, 5, 7])
    token_mask = torch.arange(10)[None] < lengths[:, None]
    return frames, frame_mask, tokens, token_mask


@pytest.mark.parametrize("weighted", [True, False])
def test_token_interaction_ignores_padding_and_pairs_agree_with_all_pairs(weighted):
    torch.manual_seed(0)
    interaction = TokenInteraction(64, weighted).eval()
    frames, frame_mask, tokens, token_mask = short_clips_and_captions()
    text, video = interaction.text_side(tokens, token_mask), interaction.video_side(frames, frame_mask)
    assert torch.allclose(text.weights.sum(-1), torch.ones(4)) and (text.weights[~token_mask] == 0).all()
    assert (video.weights[~frame_mask] == 0).all()
    scores = all_pairs(text, video)
    assert scores.shape == (4, 3) and torch.isfinite(scores).all() and scores.abs().max() <= 1 + 1e-5

    noisy_frames, noisy_tokens = frames.clone(), tokens.clone()
    noisy_frames[~frame_mask] = 100 * torch.randn(int((~frame_mask).sum()), 64)
    noisy_tokens[~token_mask] = 100 * torch.randn(int((~token_mask).sum()), 64)
    noisy = all_pairs(interaction.text_side(noisy_tokens, token_mask), interaction.video_side(noisy_frames, frame_mask))
    assert torch.allclose(scores, noisy, atol=1e-5)

    text_index, video_index = torch.tensor([[0, 3], [2, 2]]), torch.tensor([[1, 0], [2, 1]])
    explicit = paired(text.select(text_index), video.select(video_index))
    assert torch.allclose(explicit, scores[text_index, video_index], atol=1e-6)


def test_wti_reads_the_best_frame_per_token_by_hand():
    token = F.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), dim=-1)  # two tokens
    frames = F.normalize(torch.tensor([[[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]]), dim=-1)
    text = TokenSet(token, torch.ones(1, 2, dtype=torch.bool), torch.tensor([[0.75, 0.25]]))
    video = TokenSet(frames, torch.tensor([[True, True, False]]), torch.tensor([[0.5, 0.5, 0.0]]))
    diagonal = 2**-0.5
    text_to_video = 0.75 * 1.0 + 0.25 * diagonal  # token 1 best matches frame 1, token 2 frame 2
    video_to_text = 0.5 * 1.0 + 0.5 * diagonal  # frame 1 best matches token 1, frame 2 either
    assert torch.allclose(all_pairs(text, video), torch.tensor([[(text_to_video + video_to_text) / 2]]))


def encoded_split(model: CLIP4Clip, num_videos: int = 9, captions_per_video: int = 2, seed: int = 0) -> EncodedSplit:
    """A split encoded from random frame/token features through the model's heads (no video decoding)."""
    generator = torch.Generator().manual_seed(seed)
    frame_features = torch.randn(num_videos, 6, 64, generator=generator)
    mask = torch.ones(num_videos, 6, dtype=torch.bool)
    mask[::2, 3:] = False
    num_captions = num_videos * captions_per_video
    text_tokens = torch.randn(num_captions, 8, 64, generator=generator)
    text_mask = torch.arange(8)[None] < torch.randint(2, 9, (num_captions, 1), generator=generator)
    with torch.no_grad():
        sequence, pooled = model.pool(frame_features, mask) if model.pool is not None else (frame_features, None)
    text = text_tokens[:, 0]
    return EncodedSplit(
        keys=[f"v{i}" for i in range(num_videos)],
        captions=[f"c{i}" for i in range(num_captions)],
        caption_to_video=torch.arange(num_videos).repeat_interleave(captions_per_video),
        text=F.normalize(text, dim=-1) if model.similarity.normalises_text else text,
        text_tokens=text_tokens if model.similarity.keeps_text_tokens else None,
        text_mask=text_mask if model.similarity.keeps_text_tokens else None,
        video_pooled=pooled,
        video_frames=sequence,
        video_mask=mask,
        skipped={},
    )


FINE_MODELS = [("seqTransf", "wti"), ("meanP", "ti"), ("tightTransf", "cosine")]


@pytest.mark.parametrize("head,interaction", FINE_MODELS)
def test_rerank_with_k_equal_to_all_videos_is_exactly_the_fine_ranking(tiny_clip, head, interaction):
    torch.manual_seed(0)
    model = clip4clip(copy.deepcopy(tiny_clip), head, 6, interaction).eval()
    split = encoded_split(model)
    scorer = SplitScorer(model, split, torch.device("cpu"), text_chunk=5, video_chunk=4)
    fine_text, fine_video = score_blocks(model, split, torch.device("cpu"))
    fine_t2v = t2v_ranks(fine_text, split.caption_to_video, 7)
    fine_v2t = v2t_ranks(fine_video, split.caption_to_video, 9, 7)
    every_text, every_video = two_stage_blocks(scorer, topk=max(len(split.keys), len(split.captions)))
    assert (t2v_ranks(every_text, split.caption_to_video, 7) == fine_t2v).all()
    assert (v2t_ranks(every_video, split.caption_to_video, 9, 7) == fine_v2t).all()
    # a smaller k: the k candidates come first, ordered by the fine score, the rest by the coarse score
    text_block, _ = two_stage_blocks(scorer, topk=3)
    rows = text_block(0, len(split.captions))
    coarse = scorer.coarse(slice(0, 18), slice(0, 9))
    fine = scorer.fine(slice(0, 18), slice(0, 9))
    for row, coarse_row, fine_row in zip(rows, coarse, fine, strict=True):
        order = row.argsort(descending=True)
        top = set(coarse_row.topk(3).indices.tolist())
        assert set(order[:3].tolist()) == top
        assert torch.equal(order[:3], torch.tensor(sorted(top, key=lambda v: -fine_row[v].item())))
        rest = order[3:]
        assert (coarse_row[rest][:-1] >= coarse_row[rest][1:]).all()


def test_coarse_to_fine_report_has_accuracy_and_time(tiny_clip):
    model = clip4clip(copy.deepcopy(tiny_clip), "seqTransf", 6, "wti").eval()
    split = encoded_split(model)
    result = compare_coarse_to_fine(SplitScorer(model, split, torch.device("cpu")), split.caption_to_video, topk=len(split.captions))
    assert result["two_stage"]["t2v"] == result["fine_all"]["t2v"] and result["two_stage"]["v2t"] == result["fine_all"]["v2t"]
    assert result["t2v_rank_agreement_with_fine_all"] == 1.0
    assert all(result[name]["seconds"] > 0 for name in ("coarse_only", "fine_all", "two_stage"))


def test_model_with_wti_scores_short_clips_and_padded_captions(tiny_clip):
    model = clip4clip(copy.deepcopy(tiny_clip), "seqTransf", 4, "wti").eval()
    frames = torch.randint(0, 256, (2, 4, 3, 112, 112), dtype=torch.uint8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    tokens = torch.zeros(3, 32, dtype=torch.long)
    tokens[:, 0], tokens[0, 1:4], tokens[0, 4] = 49406, torch.tensor([320, 1746, 2862]), 49407
    tokens[1, 1], tokens[2, 1:3], tokens[1:, 2:4] = 49407, 1000, 0
    tokens[2, 3] = 49407
    with torch.no_grad():
        text = model.encode_text(tokens)
        video = model.encode_video(frames, mask)
        scores = model.logits(text, video)
        altered = frames.clone()
        altered[~mask] = 0
        rescored = model.logits(text, model.encode_video(altered, mask))
    assert text.tokens.shape == (3, 32, 64) and text.mask.sum(1).tolist() == [5, 2, 4]
    assert scores.shape == (3, 2) and torch.allclose(scores, rescored, atol=1e-5)


def test_lora_starts_as_the_frozen_model_and_trains_a_small_part(tiny_clip):
    model = clip4clip(copy.deepcopy(tiny_clip), "meanP", 4)
    tokens = torch.randint(1, 49000, (2, 32))
    with torch.no_grad():
        reference = model.encode_text(tokens).pooled
    total_before = count_parameters(model)[1]
    freeze_clip(model.clip)
    add_visual_prompts(model.clip, tokens=4)
    add_lora(model.clip, rank=2, alpha=16.0)
    with torch.no_grad():
        assert torch.allclose(model.encode_text(tokens).pooled, reference, atol=1e-6)  # B = 0 at the start
    trainable, total = count_parameters(model)
    names = {name for name, p in model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in name or "visual_prompts" in name for name in names)
    lora_layers = 2 + 4  # vision + text blocks of tiny-ViT
    assert trainable == 4 * 64 + lora_layers * (2 * (3 * 64 + 64) + 2 * (64 + 64))
    assert total == total_before + trainable
    saved = trainable_state(model)
    assert set(saved) >= names and not any(k.endswith(".original") for k in saved)
    frames = torch.randint(0, 256, (1, 2, 3, 112, 112), dtype=torch.uint8)
    assert model.encode_video(frames, torch.ones(1, 2, dtype=torch.bool)).pooled.shape == (1, 64)


@pytest.mark.parametrize("bad", [("tightTransf", "wti", None), ("meanP", "wti", {"bases": 4}), ("meanP", "nope", None)])
def test_impossible_method_combinations_are_refused(tiny_clip, bad):
    head, interaction, emcl = bad
    with pytest.raises(ValueError):
        clip4clip(copy.deepcopy(tiny_clip), head, 4, interaction, emcl)


def test_token_models_carry_frames_and_tokens_through_similarity(tiny_clip):
    model = clip4clip(copy.deepcopy(tiny_clip), "meanP", 6, "wti")
    frames, frame_mask, tokens, token_mask = short_clips_and_captions()
    sequence, pooled = model.pool(frames, frame_mask)
    logits = model.logits(TextFeatures(F.normalize(tokens[:, 0], dim=-1), tokens, token_mask), VideoFeatures(sequence, frame_mask, pooled))
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert model.similarity.text_weights.mlp[0].weight.grad is not None
