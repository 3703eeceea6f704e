"""Independent re-computation of EERCF's similarity, objective and two-stage test-time ranking.

Transcribed from adxcreative/EERCF@90f1d07: ``modules/modeling_fineclip_patches_cdcl.py``
``_loose_similarity`` (after its seqTransf: it receives the head's output ``visual_output``,
CLIP's frame features ``visual_output_original`` and the projected patch tokens), ``main_eercf.py``
``train_epoch`` (loss) and ``eval_epoch`` / ``_run_on_single_gpu`` (its Python loops included).
No module of this project is used. EERCF has no frame mask in these formulas: call it on full clips.
"""

from __future__ import annotations

import numpy as np
import torch


def _mean_pool(visual_output, video_mask):
    m = video_mask.to(dtype=torch.float).unsqueeze(-1)
    s = m.sum(1)
    s[s == 0.0] = 1.0
    return (visual_output * m).sum(1) / s


def _prepare(sequence_output, visual_output, visual_output_original, visual_patches, video_mask):
    visual_patches = visual_patches / visual_patches.norm(dim=-1, keepdim=True)
    visual_output_norm = visual_output / visual_output.norm(dim=-1, keepdim=True)
    video_output = _mean_pool(visual_output_norm, video_mask)
    video_output = video_output / video_output.norm(dim=-1, keepdim=True)
    frame_features = visual_output_original / visual_output_original.norm(dim=-1, keepdim=True)
    sentence_output = sequence_output.squeeze(1)
    sentence_output = sentence_output / sentence_output.norm(dim=-1, keepdim=True)
    return sentence_output, visual_output_norm, video_output, frame_features, visual_patches


def _pearson(text_feat, video_feat, alpha1=0.14, alpha2=0.0):
    z_a = (text_feat - text_feat.mean(0)) / text_feat.std(0)
    z_b = (video_feat - video_feat.mean(0)) / video_feat.std(0)
    b, d = z_a.shape
    c = torch.matmul(z_a.t(), z_b) / b
    on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
    off_diag = c.flatten()[1:].view(d - 1, d + 1)[:, :-1].pow_(2).sum()
    return on_diag * alpha1 + off_diag * alpha2


def training_outputs(global_mat_weight, frame_logit_weight, logit_scale, sequence_output, visual_output, visual_output_original,
                     visual_patches, video_mask):  # fmt: skip
    """_loose_similarity with self.training: (TIB_output list of 5 logits, 3 Pearson losses)."""
    sentence_output, visual_output_norm, video_output, frame_features, visual_patches = _prepare(
        sequence_output, visual_output, visual_output_original, visual_patches, video_mask
    )
    sentence_video_logits = logit_scale * torch.matmul(torch.matmul(sentence_output, global_mat_weight), video_output.t())
    sim = torch.matmul(sentence_output, frame_features.permute(0, 2, 1))
    sentence_frame_weak_logits = logit_scale * torch.sum(sim * torch.matmul(torch.softmax(sim / 1e-2, dim=-1), frame_logit_weight), dim=-1).t()
    b, f, p, d = visual_patches.shape
    bt = sentence_output.shape[0]
    sentence_patches_init = torch.matmul(sentence_output, visual_patches.reshape(b * f * p, d).t()).reshape(bt, b, f * p)
    sentence_patches_sim = sentence_patches_init.div(0.01).softmax(-1)
    sentence_patches_weak_logits = logit_scale * torch.sum(sentence_patches_init * sentence_patches_sim, dim=-1)
    s2f = torch.diagonal(torch.matmul(sentence_output, frame_features.permute(0, 2, 1))).T.unsqueeze(2).detach()
    adapt = (visual_output_norm * s2f.div(0.1).softmax(1)).sum(1)
    adapt = adapt / adapt.norm(dim=-1, keepdim=True)
    sentence_frame_strong_logits = logit_scale * torch.matmul(sentence_output, adapt.t())
    s2p = torch.diagonal(sentence_patches_sim.detach().permute(1, 0, 2)).T.reshape(b, f, p, 1)
    adapt_patch = torch.sum(visual_patches * s2p, dim=(1, 2))
    adapt_patch = adapt_patch / adapt_patch.norm(dim=-1, keepdim=True)
    sentence_patch_strong_logits = logit_scale * torch.matmul(sentence_output, adapt_patch.t())
    tib = [sentence_video_logits, sentence_frame_weak_logits, sentence_frame_strong_logits, sentence_patches_weak_logits,
           sentence_patch_strong_logits]  # fmt: skip
    return tib, [_pearson(sentence_output, video_output), _pearson(sentence_output, adapt), _pearson(sentence_output, adapt_patch)]


def _cross_en(sim):
    logpt = torch.nn.functional.log_softmax(sim, dim=-1)
    return (-torch.diag(logpt)).mean()


def training_loss(tib, pearson, video_weight=0.5, weakframe_weight=0.5, strongframe_weight=1.0, weakpatch_weight=0.05,
                  strongpatch_weight=0.0, cdcl_video_weight=1.0, cdcl_frame_weight=1.0, cdcl_patch_weight=0.0, weak_loss_weight=0.8,
                  strong_loss_weight=0.2, cdcl_loss_weight=0.001):  # fmt: skip
    """main_eercf.py train_epoch's loss."""
    video, frame_weak, frame_strong, patch_weak, patch_strong = tib
    weak = video * video_weight + frame_weak * weakframe_weight + patch_weak * weakpatch_weight
    strong = frame_strong * strongframe_weight + patch_strong * strongpatch_weight
    weak_loss = (_cross_en(weak) + _cross_en(weak.T)) / 2
    strong_loss = (_cross_en(strong) + _cross_en(strong.T)) / 2
    intra = pearson[0] * cdcl_video_weight + pearson[1] * cdcl_frame_weight + pearson[2] * cdcl_patch_weight
    return weak_loss * weak_loss_weight + strong_loss * strong_loss_weight + intra * cdcl_loss_weight


def eval_similarities(global_mat_weight, frame_logit_weight, logit_scale, sequence_output, visual_output, visual_output_original,
                      visual_patches, video_mask):  # fmt: skip
    """_loose_similarity without training (start_patch_eval False): video, frame weak, frame strong
    (its per-caption loops), patch weak; (captions, videos) each."""
    sentence_output, visual_output_norm, video_output, frame_features, visual_patches = _prepare(
        sequence_output, visual_output, visual_output_original, visual_patches, video_mask
    )
    sentence_video_logits = logit_scale * torch.matmul(torch.matmul(sentence_output, global_mat_weight), video_output.t())
    sim = torch.matmul(sentence_output, frame_features.permute(0, 2, 1))
    frame_weak = logit_scale * torch.sum(sim * torch.matmul(torch.softmax(sim / 1e-2, dim=-1), frame_logit_weight), dim=-1).t()
    b, f, p, d = visual_patches.shape
    c = sentence_output.shape[0]
    init = torch.matmul(sentence_output, visual_patches.reshape(b * f * p, d).t()).reshape(c, b, f * p)
    patch_weak = logit_scale * torch.sum(init * init.div(0.01).softmax(-1), dim=-1)
    s2f = torch.matmul(sentence_output, frame_features.permute(0, 2, 1)).div(0.1).softmax(-1).permute(1, 0, 2)  # C, B, F
    wait = torch.zeros((c, b, f, d))
    for i in range(c):
        wait[i] = s2f[i].unsqueeze(2) * visual_output_norm
    tmp = wait.sum(2)
    tmp = tmp / tmp.norm(dim=-1, keepdim=True)
    frame_strong = torch.zeros((c, b))
    for i in range(c):
        frame_strong[i] = logit_scale * tmp[i].matmul(sentence_output[i].unsqueeze(1)).reshape(-1)
    return sentence_video_logits, frame_weak, frame_strong, patch_weak


def two_stage_matrix(video, frame_weak, frame_strong, patch_weak, topk, video_weight=0.5, weakframe_weight=0.5, strongframe_weight=1.0,
                     weakpatch_weight=0.05, weak_loss_weight=0.8, strong_loss_weight=0.2) -> np.ndarray:  # fmt: skip
    """eval_epoch's ranking matrix (dsl off): top k by the video score, rerank logits + 100, then
    the same top k rescored 100 + 0.8 frame weak + 0.2 frame strong + 0.2 patch weak + 0.5 video."""
    video, frame_weak, frame_strong, patch_weak = (x.numpy().astype(np.float64) for x in (video, frame_weak, frame_strong, patch_weak))
    rerank = video * video_weight + frame_weak * weakframe_weight + patch_weak * weakpatch_weight
    rerank = rerank * weak_loss_weight + frame_strong * strongframe_weight * strong_loss_weight
    main = video.copy()
    ind = np.argsort(main, axis=1)[:, -topk:]
    for i in range(len(main)):
        main[i][ind[i]] = rerank[i][ind[i]] + 100
    ind = np.argsort(main, axis=1)[:, -topk:]
    ii, jj, kk = 0.8, 0.2, 0.5
    for i in range(len(main)):
        main[i][ind[i]] = 100.0 + frame_weak[i][ind[i]] * ii + (1 - ii) * frame_strong[i][ind[i]] + jj * patch_weak[i][ind[i]] + kk * video[i][ind[i]]
    return main
