"""DGL (knightyxp/DGL, ``modules/clip.py``): prompts for a frozen CLIP, generated from one shared
latent space, and global-local video attention.

- Local prompts, deep: for each of the first ``prompt_layers`` layers of both towers, 8 text
  prompts (4 after the start token, 4 after the last text position) and 4 prompts per frame
  (after each frame's class token) replace the previous layer's prompt positions. They come from
  one generator (``--dgl-latent``):
  - ``linear`` (DGL's "unified linear projection", the 0.83M-parameter model of its paper): a
    (4, layers x width) visual embedding is each layer's frame prompts (the same for every frame);
    two Linear(vision width, text width) make the 4 + 4 text prompts from it;
  - ``transformer`` (``shared_latent_space transformer``, its training script's default): an
    Embedding of 8 + 4 x frames rows of layers x width, one CLIP-style block over each layer's
    rows, an MLP (width -> 2 width -> text width) for the 8 text rows; frames get their own prompts.
- Global prompts: 4 tokens before the video's frames, entered once at the input. In every vision
  layer each frame attends to the global prompts and its own tokens, and the global prompts
  attend to themselves and to every token of every frame (``ResidualAttentionBlock`` with
  ``visual=True``). The video feature is the first global prompt after ``ln_post`` and the
  projection (DGL's ``visual_output_type global_prompt0``).

Only the generator and the prompts train. Where this differs from DGL under ``--padding-rule masked``
(the default): padded frames are hidden from the global prompts (DGL has no frame mask inside its
encoder; ``reference`` runs it without one, model/padding.py). DGL's text is causal, so its 4
trailing prompts never reach the end token; they are kept, as DGL has them.
"""

from __future__ import annotations

import torch
from open_clip.transformer import QuickGELU, ResidualAttentionBlock
from torch import nn

from model import vit_blocks
from model.features import TextFeatures
from model.tempme import dgl_prompt_init, patch_size


class LinearPromptGenerator(nn.Module):
    """DGL's ``shared_latent_space linear``."""

    def __init__(self, vision_width: int, text_width: int, layers: int, frame_prompts: int, text_prompts: int, patch: int) -> None:
        super().__init__()
        if text_prompts != 2 * frame_prompts:
            raise ValueError("DGL's linear generator makes its text prompts as prefix + postfix of the frame prompts: "
                             "--dgl-text-prompts must be 2 x --dgl-frame-prompts")  # fmt: skip
        self.layers, self.frame_prompts, self.width = layers, frame_prompts, vision_width
        self.visual_prompt_embedding = dgl_prompt_init(frame_prompts, layers * vision_width, patch, token_width=vision_width)
        self.prefix = nn.Linear(vision_width, text_width)
        self.postfix = nn.Linear(vision_width, text_width)

    def forward(self, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(layers, text prompts, text width), (layers, frames, frame prompts, vision width)."""
        visual = self.visual_prompt_embedding.view(self.frame_prompts, self.layers, self.width).transpose(0, 1)
        text = torch.cat([self.prefix(visual), self.postfix(visual)], dim=1)
        return text, visual.unsqueeze(1).expand(-1, frames, -1, -1)


class TransformerPromptGenerator(nn.Module):
    """DGL's ``shared_latent_space transformer`` (``PromptTransformer``, ``unified_prompt_mlp``)."""

    def __init__(self, vision_width: int, text_width: int, layers: int, frame_prompts: int, text_prompts: int, frames: int) -> None:
        super().__init__()
        self.layers, self.frame_prompts, self.text_prompts, self.width, self.frames = (
            layers,
            frame_prompts,
            text_prompts,
            vision_width,
            frames,
        )
        self.unified_prompt_embedding = nn.Embedding(text_prompts + frame_prompts * frames, layers * vision_width)
        self.prompt_block = ResidualAttentionBlock(vision_width, max(1, vision_width // 64), act_layer=QuickGELU, batch_first=True)
        self.unified_prompt_mlp = nn.Sequential(
            nn.Linear(vision_width, 2 * vision_width), QuickGELU(), nn.Linear(2 * vision_width, text_width)
        )

    def forward(self, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        if frames != self.frames:
            raise ValueError(f"DGL's transformer generator was built for {self.frames} frames per clip, got {frames}")
        rows = self.unified_prompt_embedding.weight.view(-1, self.layers, self.width).transpose(0, 1)  # (layers, rows, width)
        out = self.prompt_block(rows)
        text = self.unified_prompt_mlp(out[:, : self.text_prompts])
        visual = out[:, self.text_prompts :].reshape(self.layers, frames, self.frame_prompts, self.width)
        return text, visual


class DGLEncoder(nn.Module):
    """Both towers of a frozen CLIP run with DGL's prompts."""

    alpha = 1.0  # the video vector is the global prompt's alone (global_prompt0)

    def __init__(self, clip: nn.Module, latent: str, max_frames: int, text_prompts: int = 8, frame_prompts: int = 4,
                 global_prompts: int = 4, prompt_layers: int = 12) -> None:  # fmt: skip
        super().__init__()
        visual = clip.visual
        vit_blocks.check_plain_vit(visual, "DGL")
        depth = min(len(visual.transformer.resblocks), len(clip.transformer.resblocks))
        if not 1 <= prompt_layers <= depth:
            raise ValueError(f"--dgl-prompt-layers must be between 1 and {depth} (the shallower tower's layers), not {prompt_layers}")
        if text_prompts % 2:
            raise ValueError("--dgl-text-prompts must be even (half after the start token, half at the end)")
        vision_width, text_width = visual.transformer.width, clip.transformer.width
        self.frame_prompts, self.text_prompts, self.prompt_layers = frame_prompts, text_prompts, prompt_layers
        if latent == "linear":
            self.generator = LinearPromptGenerator(vision_width, text_width, prompt_layers, frame_prompts, text_prompts, patch_size(visual))
        elif latent == "transformer":
            self.generator = TransformerPromptGenerator(vision_width, text_width, prompt_layers, frame_prompts, text_prompts, max_frames)
        else:
            raise ValueError(f"--dgl-latent must be linear or transformer (model/methods/dgl.py DGL_LATENTS), not {latent!r}")
        self.global_prompts = dgl_prompt_init(global_prompts, vision_width, patch_size(visual))

    def encode_video(self, clip: nn.Module, pixels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = clip.visual
        videos, frames = mask.shape
        _, frame_prompts = self.generator(frames)  # (layers, T, P, D)
        x = vit_blocks.frame_embeddings(visual, pixels.flatten(0, 1))  # (B*T, 1 + patches, D)
        local = frame_prompts.to(x.dtype)
        count = self.frame_prompts

        def with_local(tokens: torch.Tensor, layer: int) -> torch.Tensor:
            prompts = local[layer].unsqueeze(0).expand(videos, -1, -1, -1).reshape(videos * frames, count, -1)
            return torch.cat([tokens[:, :1], prompts, tokens[:, 1 + count :] if layer else tokens[:, 1:]], dim=1)

        tokens = with_local(x, 0)
        mass = mask.reshape(-1, 1).float().expand(-1, tokens.shape[1])
        prompts = self.global_prompts.to(x.dtype).unsqueeze(0).expand(videos, -1, -1)
        for layer, block in enumerate(visual.transformer.resblocks):
            if 0 < layer < self.prompt_layers:
                tokens = with_local(tokens, layer)
            out = vit_blocks.attention(block, tokens, mass, prompts)
            tokens, prompts = vit_blocks.finish(block, out.tokens), vit_blocks.finish(block, out.prompts)
        frame_features = vit_blocks.project_tokens(visual, tokens[:, 0]).view(videos, frames, -1)
        return frame_features, vit_blocks.project_tokens(visual, prompts[:, 0])

    def encode_text(self, clip: nn.Module, tokens: torch.Tensor) -> TextFeatures:
        """CLIP's text tower with DGL's deep text prompts (causal mask over text + prompts)."""
        text_prompts, _ = self.generator(1 if isinstance(self.generator, LinearPromptGenerator) else self.generator.frames)
        length, half = tokens.shape[1], self.text_prompts // 2
        if length > clip.positional_embedding.shape[0]:
            raise ValueError(f"{length} tokens exceed the model's context of {clip.positional_embedding.shape[0]}")
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
        prompts = text_prompts.to(x.dtype)

        def with_prompts(sequence: torch.Tensor, layer: int, first: bool) -> torch.Tensor:
            layer_prompts = prompts[layer].unsqueeze(0).expand(sequence.shape[0], -1, -1)
            body = sequence[:, 1:length] if first else sequence[:, 1 + half : half + length]
            return torch.cat([sequence[:, :1], layer_prompts[:, :half], body, layer_prompts[:, half:]], dim=1)

        x = with_prompts(x, 0, first=True)
        causal = torch.full((x.shape[1], x.shape[1]), float("-inf"), device=x.device, dtype=x.dtype).triu(1)
        for layer, block in enumerate(clip.transformer.resblocks):
            if 0 < layer < self.prompt_layers:
                x = with_prompts(x, layer, first=False)
            x = block(x, attn_mask=causal)
        x = clip.ln_final(x)
        projection = clip.text_projection
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
        text_positions = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(1 + half, half + length)]).to(x.device)
        token_features = x[:, text_positions]
        end = tokens.argmax(dim=-1)
        positions = torch.arange(length, device=tokens.device)
        return TextFeatures(pooled=token_features[torch.arange(x.shape[0], device=x.device), end], tokens=token_features,
                            mask=positions[None, :] <= end[:, None])  # fmt: skip
