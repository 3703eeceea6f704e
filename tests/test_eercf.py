"""EERCF's similarity, objective and two-stage ranking against a transcription of its code
(tests/reference_eercf.py), same weights, same inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.encode import EncodedSplit
from eval.rerank import two_stage_blocks
from eval.scoring import SplitScorer
from model import backbone
from model.clip4clip import CLIP4Clip
from model.config import ModelConfig
from model.eercf import EERCFWeights
from model.factory import assemble_model
from tests import reference_eercf
from train.config import TrainConfig
from train.objective import retrieval_loss

SOT, EOT = 49406, 49407


@pytest.fixture(scope="module")
def model() -> CLIP4Clip:
    torch.manual_seed(0)
    clip = backbone.load_clip("tiny-ViT", None)
    model = assemble_model(clip, ModelConfig(model="tiny-ViT", sim_header="seqTransf", eercf=True, max_frames=4)).eval()
    with torch.no_grad():  # away from identity, so that the test sees both learned matrices
        model.similarity.global_mat_weight.add_(0.05 * torch.randn_like(model.similarity.global_mat_weight))
        model.similarity.frame_logit_weight.add_(0.2 * torch.rand_like(model.similarity.frame_logit_weight))
    return model


def inputs(videos: int = 5, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (videos, 4, 3, 224, 224), generator=generator, dtype=torch.uint8)
    tokens = torch.randint(1, 40000, (videos, 12), generator=generator)
    tokens[:, 0] = SOT
    for row in range(videos):
        tokens[row, 4 + row % 5] = EOT
        tokens[row, 5 + row % 5 :] = 0
    return frames, torch.ones(videos, 4, dtype=torch.bool), tokens


def reference_args(model, text, video):
    s = model.similarity
    return (s.global_mat_weight.detach(), s.frame_logit_weight.detach(), model.logit_scale().detach(), text.pooled[:, None],
            video.frames, video.clip_frames, video.patches, video.mask)  # fmt: skip


def test_one_image_encoder_pass_gives_frames_and_patches(model):
    frames, mask, _ = inputs()
    calls = []
    handle = model.clip.visual.transformer.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        video = model.encode_video(frames, mask)
    handle.remove()
    assert len(calls) == 1 and video.patches.shape == (5, 4, 49, 64)
    with torch.no_grad():
        torch.testing.assert_close(video.clip_frames, backbone.encode_frames(model.clip, frames))
        model.clip.visual.output_tokens = True  # open_clip's own tokens (after ln_post, not projected)
        _, tokens = model.clip.visual(backbone.normalize_frames(frames.flatten(0, 1)))
        model.clip.visual.output_tokens = False
    torch.testing.assert_close(video.patches, (tokens @ model.clip.visual.proj).view(5, 4, 49, -1))


def test_training_logits_pearson_and_loss_match_eercf(model):
    frames, mask, tokens = inputs()
    with torch.no_grad():
        text, video = model.encode_text(tokens), model.encode_video(frames, mask)
        scores = model.similarity(text, video, model.logit_scale())
        tib, pearson = reference_eercf.training_outputs(*reference_args(model, text, video))
        loss, parts = retrieval_loss(model, text, video, TrainConfig(train_shards="-", output_dir="-", sim_header="seqTransf", eercf=True))
    torch.testing.assert_close(scores.logits, 0.5 * tib[0] + 0.5 * tib[1] + 0.05 * tib[3], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(scores.extra_logits[0][2], tib[2] + 0.0 * tib[4], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(scores.regularisers[0][2], pearson[0] + pearson[1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(loss, reference_eercf.training_loss(tib, pearson), atol=1e-5, rtol=1e-5)
    assert set(parts) == {"contrastive", "strong", "pearson"}
    # patch strong counts when its weights say so
    heavy = EERCFWeights(strongpatch=0.5, cdcl_patch=2.0)
    model.similarity.weights, original = heavy, model.similarity.weights
    try:
        with torch.no_grad():
            scores = model.similarity(text, video, model.logit_scale())
    finally:
        model.similarity.weights = original
    torch.testing.assert_close(scores.extra_logits[0][2], tib[2] + 0.5 * tib[4], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(scores.regularisers[0][2], pearson[0] + pearson[1] + 2.0 * pearson[2], atol=1e-4, rtol=1e-5)


def encoded(model, videos: int = 9, seed: int = 1) -> EncodedSplit:
    frames, mask, tokens = inputs(videos, seed)
    with torch.no_grad():
        text, video = model.encode_text(tokens), model.encode_video(frames, mask)
    return EncodedSplit(keys=[f"v{i}" for i in range(videos)], captions=[f"c{i}" for i in range(videos)],
                        caption_to_video=torch.arange(videos), text=text.pooled, text_tokens=None, text_mask=None,
                        video_pooled=video.pooled, video_frames=video.frames, video_mask=video.mask, skipped={},
                        video_clip_frames=video.clip_frames, video_patches=video.patches)  # fmt: skip


def test_fine_scores_and_two_stage_ranking_match_eercf_eval(model):
    split = encoded(model)
    scorer = SplitScorer(model, split, torch.device("cpu"), text_chunk=4, video_chunk=2)
    sd_args = (model.similarity.global_mat_weight.detach(), model.similarity.frame_logit_weight.detach(), model.logit_scale().detach(),
               split.text[:, None], split.video_frames, split.video_clip_frames, split.video_patches.float(), split.video_mask)  # fmt: skip
    video, frame_weak, frame_strong, patch_weak = reference_eercf.eval_similarities(*sd_args)
    reference_fine = (0.5 * video + 0.8 * frame_weak + 0.2 * frame_strong + 0.2 * patch_weak) / model.logit_scale().detach()
    every = slice(0, 9)
    torch.testing.assert_close(scorer.fine(every, every), reference_fine, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(scorer.coarse(every, every), video / model.logit_scale().detach(), atol=2e-5, rtol=1e-5)
    candidates = torch.tensor([[3, 1, 7], [0, 8, 2]])
    torch.testing.assert_close(
        scorer.fine_for_texts(torch.tensor([4, 6]), candidates), reference_fine[[4, 6]].gather(1, candidates), atol=2e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        scorer.fine_for_videos(torch.tensor([4, 6]), candidates), reference_fine.T[[4, 6]].gather(1, candidates), atol=2e-4, rtol=1e-4
    )
    text_block, _ = two_stage_blocks(scorer, topk=4)
    ours = text_block(0, 9).numpy()
    theirs = reference_eercf.two_stage_matrix(video, frame_weak, frame_strong, patch_weak, topk=4)
    # the same top 4, in the same order, and the rest in coarse order: the whole ranking agrees
    assert (np.argsort(-ours, axis=1, kind="stable") == np.argsort(-theirs, axis=1, kind="stable")).all()


def test_padded_frames_change_nothing(model):
    frames, mask, tokens = inputs(4, seed=2)
    mask[0, 2:] = False
    mask[3, 1:] = False
    other = frames.clone()
    other[~mask] = inputs(4, seed=7)[0][~mask]
    with torch.no_grad():
        text = model.encode_text(tokens)
        a, b = model.encode_video(frames, mask), model.encode_video(other, mask)
        scores_a, scores_b = model.similarity(text, a, model.logit_scale()), model.similarity(text, b, model.logit_scale())
        fine_a = model.similarity.pair_scorer(text, a).block(slice(0, 4), slice(0, 4))
        fine_b = model.similarity.pair_scorer(text, b).block(slice(0, 4), slice(0, 4))
    torch.testing.assert_close(scores_a.logits, scores_b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores_a.extra_logits[0][2], scores_b.extra_logits[0][2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fine_a, fine_b, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(fine_a).all()


def test_eercf_needs_its_seqtransf_head():
    for bad in ({"sim_header": "meanP"}, {"sim_header": "seqTransf", "interaction": "wti"}, {"sim_header": "seqTransf", "peft": "tempme",
                                                                                           "pretrained": "x"}):  # fmt: skip
        assert "--eercf" in ModelConfig(model="tiny-ViT", eercf=True, **bad).problem()
