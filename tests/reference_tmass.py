"""T-MASS's stochastic text, training loss and inference, transcribed from its code
(Jiamian-Wang/T-MASS-text-video-retrieval), for tests.

``modules/stochastic_module.py`` as written (its ``Config`` replaced by the numbers it reads);
``training_loss``: the loss lines of ``trainer/trainer_stochastic.py`` ``_train_epoch``;
``inference_sims``: ``_valid_epoch_step``'s loop over videos and trials with its selection of the best
sample, the one change being where the draws come from: ``sigmas[trial]`` for every video instead of a
fresh ``torch.rand_like`` per video (this project's seeded, shared draws, model/tmass.py).
X-Pool's pooling and losses are tests/reference_xpool.py's (T-MASS imports X-Pool's modules).
"""

from types import SimpleNamespace

import torch
import torch.nn as nn

from tests.reference_xpool import clip_loss, sim_matrix_training


def config(num_frames, embed_dim, stochastic_prior="uniform01", stochastic_prior_std=1.0):
    return SimpleNamespace(num_frames=num_frames, embed_dim=embed_dim, stochastic_prior=stochastic_prior,
                           stochastic_prior_std=stochastic_prior_std)  # fmt: skip


class LinearCosRadius(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_frames = config.num_frames
        self.embed_dim = config.embed_dim
        self.linear_proj = nn.Linear(self.num_frames, self.embed_dim)
        self.learnable_scalar = nn.Parameter(torch.Tensor(1))
        self._init_parameters()
        self.config = config

    def _init_parameters(self):
        for name, param in self.named_parameters():
            if "linear" in name or "proj" in name:
                if "weight" in name:
                    nn.init.eye_(param)
                elif "bias" in name:
                    param.data.fill_(0.0)

    def forward(self, text_embeds, video_embeds):
        text_embeds = text_embeds / text_embeds.norm(dim=-1, keepdim=True)
        video_embeds = video_embeds / video_embeds.norm(dim=-1, keepdim=True)
        text_embeds = text_embeds.unsqueeze(1).repeat(1, self.config.num_frames, 1)
        sims = torch.matmul(text_embeds, video_embeds.permute(0, 2, 1))
        sims = torch.mean(sims, dim=1)
        sims_out = self.linear_proj(sims)
        return sims_out


class StochasticText(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.std_branch = LinearCosRadius(config)

    def forward(self, text_features, video_features, sigma=None):
        """``sigma``: given by inference_sims (its draws); None draws as T-MASS does."""
        text_mean = text_features
        log_var = self.std_branch(text_features, video_features)
        text_std = torch.exp(log_var)
        if sigma is None and self.config.stochastic_prior == "uniform01":
            sigma = torch.rand_like(text_features)
        elif sigma is None:
            sigma = torch.normal(mean=0.0, std=self.config.stochastic_prior_std, size=text_features.shape).to(text_std.device)
        text_features = text_mean + sigma * text_std
        return text_features, text_mean, log_var


def training_loss(pool_frames, stochastic, text_features, video_features, logit_scale, support_loss_weight):
    """clip_stochastic.forward(is_train=True) then _train_epoch's loss_all."""
    video_embeds_pooled = pool_frames(text_features, video_features)
    text_embeds_stochastic, text_mean, text_log_var = stochastic(text_features, video_features)
    output = sim_matrix_training(text_embeds_stochastic, video_embeds_pooled)
    loss = clip_loss(output, logit_scale)
    video_embeds_pooled_avg = torch.mean(video_embeds_pooled, dim=1).squeeze()
    pointer = video_embeds_pooled_avg - text_features
    text_support = pointer / pointer.norm(dim=-1, keepdim=True) * torch.exp(text_log_var) + text_features
    output_support = sim_matrix_training(text_support, video_embeds_pooled)
    loss_support = clip_loss(output_support, logit_scale)
    return loss + loss_support * support_loss_weight, output, output_support


def inference_sims(pool_frames, stochastic, text_embeds, vid_embeds, sigmas):
    """(num_texts, num_videos) best-of-trials cosines, as _valid_epoch_step selects them."""
    vid_embeds_pooled = pool_frames(text_embeds, vid_embeds)
    text_embeds_stochastic_allpairs = torch.zeros(size=(vid_embeds.shape[0], text_embeds.shape[0], text_embeds.shape[1]))
    for (idx_vid, single_vid), single_vid_embed_pooled in zip(enumerate(vid_embeds), vid_embeds_pooled):
        single_vid_vec = single_vid.unsqueeze(0)
        single_vid_repeat = single_vid_vec.tile((text_embeds.shape[0], 1, 1))
        all_text_embed_stochstic = []
        for trial in range(len(sigmas)):
            all_text_embed_stochastic, _, _ = stochastic(text_embeds, single_vid_repeat, sigma=sigmas[trial])
            all_text_embed_stochstic.append(all_text_embed_stochastic)
        all_text_embed_stochstic_arr = torch.stack(all_text_embed_stochstic, dim=0)
        all_text_embed_stochstic_arr = all_text_embed_stochstic_arr / all_text_embed_stochstic_arr.norm(dim=-1, keepdim=True)
        single_vid_embed_pooled = single_vid_embed_pooled / single_vid_embed_pooled.norm(dim=-1, keepdim=True)
        sim_select = torch.sum(torch.mul(all_text_embed_stochstic_arr, single_vid_embed_pooled), dim=-1)
        max_indices = torch.argmax(sim_select, dim=0)
        selected_plane = torch.ones((all_text_embed_stochstic_arr.shape[1], all_text_embed_stochstic_arr.shape[2]))
        for i in range(all_text_embed_stochstic_arr.shape[1]):
            selected_plane[i, :] = all_text_embed_stochstic_arr[max_indices[i], i, :]
        text_embeds_stochastic_allpairs[idx_vid, :, :] = selected_plane
    # sim_matrix_inference_stochastic's cosine of each selected (already unit) text with its pooled video
    pooled_unit = vid_embeds_pooled / vid_embeds_pooled.norm(dim=-1, keepdim=True)
    return torch.einsum("vtd,vtd->tv", text_embeds_stochastic_allpairs, pooled_unit)


def ours_to_reference(state):
    """Our CosineRadius's keys as T-MASS's ``stochastic.std_branch`` names them."""
    return dict(state)
