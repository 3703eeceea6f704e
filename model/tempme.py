"""TempMe's video encoder: CLIP's frozen ViT with intra-frame and progressive cross-frame token merging.

As TempMe's ``modeling.py`` ``get_video_feat`` and ``module_tome_patch.py`` ``ToMeBlock`` run it
(defaults from its ``main.py``: ``tome_r 2``, ``merge_layer 8-9-10``, ``merge_frame_num 2-2-3``,
``merge_token_proportion 30-10``, ``frame_pos 1``, LoRA dim 8 on q/k/v of both towers):

- layers before the first merge layer: each frame alone, ``tome_r`` tokens merged per layer
  after attention (ToMe, proportional attention: keys biased by log(mass));
- merge layer l with factor f: f consecutive groups (frames, later segments) join into one (class
  tokens first); if ``frame_pos``, a learned per-frame embedding is added to each frame's tokens;
  int(tokens x f x 30%) tokens merge across the joined frames before attention, and
  int(remaining x 10%) after it (both capped at half the mergeable tokens, as TempMe caps them);
- later layers: int(tokens x 10%) merged after attention.
- output: every frame's class token (they never merge), ``ln_post`` and projection, one per frame
  in frame order; the head (meanP in TempMe) pools them with the frame mask.

For 12 frames of ViT-B/32 the tokens per group run 50 -> 34 (layers 0-7), 68 -> 48 -> 44
(layer 8, 6 segments of 2 frames), 88 -> 62 -> 56 (layer 9, 3 of 4), 168 -> 118 -> 107 (layer 10,
1 of 12), 107 -> 97 (layer 11): ``layer_plan`` is that rule, tested against TempMe's loop.

Optional global prompts (the dual-attention seed, model/methods/dual_attention.py) join at a chosen layer
and then attend to every token of their video while every group also attends to them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model import vit_blocks
from model.merge_schedule import LayerPlan, MergeSchedule
from model.token_merging import TokenGroups, bipartite_matching, join_groups, merge_weighted


def dgl_prompt_init(count: int, width: int, patch: int, token_width: int | None = None) -> nn.Parameter:
    """DGL's prompt initialisation (VPT's xavier-uniform): uniform(-v, v) with
    v = sqrt(6 / (3 * patch^2 + token width)); ``token_width`` when a row packs several tokens."""
    bound = math.sqrt(6.0 / float(3 * patch * patch + (token_width or width)))
    return nn.Parameter(torch.empty(count, width).uniform_(-bound, bound))


def patch_size(visual: nn.Module) -> int:
    size = visual.patch_size
    return int(size[0] if isinstance(size, tuple | list) else size)


class MergingVideoEncoder(nn.Module):
    """The frozen ViT run TempMe's way; trainable: the per-frame position embeddings of each
    merge layer (TempMe's ``TVPt_Video_Positional_embedding``) and optional global prompts."""

    def __init__(
        self, clip: nn.Module, schedule: MergeSchedule, max_frames: int, global_prompts: int = 0, prompt_layer: int = 0, alpha: float = 0.0
    ) -> None:
        super().__init__()
        visual = clip.visual
        vit_blocks.check_plain_vit(visual, "token merging")
        layers, width = len(visual.transformer.resblocks), visual.transformer.width
        problem = schedule.problem(max_frames, layers)
        if problem:
            raise ValueError(problem)
        if global_prompts and not 0 <= prompt_layer < layers:
            raise ValueError(f"global prompts must join at a layer of the vision tower (0-{layers - 1}), not {prompt_layer}")
        self.schedule, self.max_frames, self.prompt_layer, self.alpha = schedule, max_frames, prompt_layer, alpha
        self.frame_positions = (
            nn.ParameterList(nn.Parameter(torch.zeros(frames, width)) for frames in schedule.frames_before_joins(max_frames))
            if schedule.frame_pos
            else None
        )
        self.global_prompts = dgl_prompt_init(global_prompts, width, patch_size(visual)) if global_prompts else None

    def encode_video(self, clip: nn.Module, pixels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, 3, H, W) normalised pixels -> per-frame features (B, T, D) and the global
        prompt's feature (B, D) when there are prompts."""
        visual = clip.visual
        videos, frames = mask.shape
        if frames != self.max_frames:
            raise ValueError(f"token merging was set up for {self.max_frames} frames per clip, got {frames}")
        x = vit_blocks.frame_embeddings(visual, pixels.flatten(0, 1))
        mass = mask.reshape(-1, 1).float().expand(-1, x.shape[1])
        groups = TokenGroups(x, mass, protected=1, groups_per_video=frames)
        prompts, joins = None, 0
        for layer, block in enumerate(visual.transformer.resblocks):
            if self.global_prompts is not None and layer == self.prompt_layer:
                prompts = self.global_prompts.to(x.dtype).unsqueeze(0).expand(videos, -1, -1)
            plan = self.schedule.layer_plan(layer, groups.x.shape[1], groups.protected)
            if plan.join > 1:
                groups = self._join(groups, plan, joins)
                joins += 1
            out = vit_blocks.attention(block, groups.x, groups.mass, prompts)
            groups = TokenGroups(out.tokens, groups.mass, groups.protected, groups.groups_per_video)
            groups = merge_weighted(bipartite_matching(out.metric, groups.mass, plan.after, groups.protected), groups)
            groups.x = vit_blocks.finish(block, groups.x)
            prompts = vit_blocks.finish(block, out.prompts) if out.prompts is not None else None
        class_tokens = groups.x[:, : groups.protected].reshape(videos, frames, -1)
        features = vit_blocks.project_tokens(visual, class_tokens)
        global_feature = vit_blocks.project_tokens(visual, prompts[:, 0]) if prompts is not None else None
        return features, global_feature

    def _join(self, groups: TokenGroups, plan: LayerPlan, joins: int) -> TokenGroups:
        """TempMe's cross-frame step: join ``plan.join`` groups, add the frame embedding, merge."""
        per_video = groups.groups_per_video
        metric = join_groups(groups.x.detach(), plan.join, groups.protected)
        x = groups.x
        if self.frame_positions is not None and plan.before > 0:  # TempMe adds it only when it merges
            frame_of_group = torch.arange(x.shape[0], device=x.device) % per_video
            x = x + self.frame_positions[joins].to(x.dtype)[frame_of_group][:, None, :]
        protected = groups.protected * plan.join
        joined = TokenGroups(join_groups(x, plan.join, groups.protected), join_groups(groups.mass, plan.join, groups.protected),
                             protected, per_video // plan.join)  # fmt: skip
        return merge_weighted(bipartite_matching(metric, joined.mass, plan.before, protected), joined)
