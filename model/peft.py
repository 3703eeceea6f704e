"""Parameter-efficient tuning: CLIP frozen, a few small modules trained on top of it.

- Visual prompts (shallow VPT, as DGL's global prompts): N learnable tokens joined to every
  frame's patch tokens before the vision transformer; they read from and write to the
  patches through attention, and the class token still gives the frame feature.
- LoRA on attention: every ``nn.MultiheadAttention`` in both towers gets a rank-r update
  ``(alpha / r) * B @ A`` on its packed q/k/v projection and its output projection. It is
  registered as a ``torch.nn.utils.parametrize`` parametrisation, so open_clip's modules run
  unchanged; B starts at zero, so training starts from exactly the frozen model.

Checkpoints of such runs hold only what is trainable (prompts, LoRA factors, the head) and a
reference to the frozen base weights (path and SHA-256); ``base_reference`` and
``check_base`` are that contract.
"""

from __future__ import annotations

import hashlib
import math
import os

import torch
from torch import nn
from torch.nn.utils import parametrize

TRAINABLE_MARKERS = ("visual_prompts", "lora_")


class LowRankDelta(nn.Module):
    """Parametrisation W -> W + scale * B @ A (A: r x in, B: out x r)."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float) -> None:
        super().__init__()
        self.lora_a = nn.Parameter(torch.empty(rank, in_features))
        self.lora_b = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_b @ self.lora_a).to(weight.dtype)


class PromptedPreNorm(nn.Module):
    """Wraps the vision tower's ``ln_pre``: appends the prompt tokens, then normalises."""

    def __init__(self, ln_pre: nn.Module, width: int, tokens: int) -> None:
        super().__init__()
        self.ln_pre = ln_pre
        self.visual_prompts = nn.Parameter(torch.randn(tokens, width) * width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1 + patches, width)
        prompts = self.visual_prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        return self.ln_pre(torch.cat([x, prompts], dim=1))


def _add_lora(clip: nn.Module, rank: int, alpha: float, output_projection: bool = True) -> None:
    for module in list(clip.modules()):
        if not isinstance(module, nn.MultiheadAttention):
            continue
        if not module._qkv_same_embed_dim:
            raise ValueError("LoRA here expects packed q/k/v projections (open_clip's default attention)")
        width = module.embed_dim
        parametrize.register_parametrization(module, "in_proj_weight", LowRankDelta(3 * width, width, rank, alpha))
        if output_projection:
            parametrize.register_parametrization(module.out_proj, "weight", LowRankDelta(width, width, rank, alpha))


def freeze_clip(clip: nn.Module) -> None:
    """Every CLIP weight frozen (``--peft`` other than none); the methods then add what trains."""
    for parameter in clip.parameters():
        parameter.requires_grad_(False)


def add_visual_prompts(clip: nn.Module, tokens: int) -> None:
    """Shallow visual prompts joined to every frame's patch tokens before the vision transformer."""
    if not hasattr(clip.visual, "ln_pre") or not hasattr(clip.visual, "class_embedding"):
        raise ValueError("visual prompts need a ViT vision tower (ln_pre + class token)")
    clip.visual.ln_pre = PromptedPreNorm(clip.visual.ln_pre, clip.visual.class_embedding.shape[-1], tokens)


def add_lora(clip: nn.Module, rank: int, alpha: float) -> None:
    """LoRA on q/k/v and the output projection of every attention of both towers, scaled alpha / rank."""
    _add_lora(clip, rank, alpha)


def add_tempme_lora(clip: nn.Module, rank: int) -> None:
    """TempMe's LoRA (``TVPt_LoRA_a/b``): q/k/v only, no scale (the update is B @ A), both towers."""
    _add_lora(clip, rank, float(rank), output_projection=False)


def is_trainable_backbone_name(name: str) -> bool:
    """Parameters added inside CLIP by PEFT: trained at the full learning rate, saved in checkpoints."""
    return any(marker in name for marker in TRAINABLE_MARKERS)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State to checkpoint for a PEFT run: everything except the frozen CLIP weights."""
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad and name.startswith("clip.")}
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a PEFT checkpoint onto a model whose frozen weights came from the base file."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    lost = [name for name in missing if name not in frozen]
    if lost or unexpected:
        raise RuntimeError(f"checkpoint does not match the model: missing {lost[:5]}, unexpected {unexpected[:5]}")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_reference(pretrained: str | None) -> dict:
    """What a PEFT checkpoint records about its frozen base, to find and verify it later."""
    if pretrained and os.path.isfile(pretrained):
        return {"pretrained": os.path.abspath(pretrained), "sha256": file_sha256(pretrained), "bytes": os.path.getsize(pretrained)}
    return {"pretrained": pretrained, "sha256": None, "bytes": None}


def check_base(reference: dict, path: str) -> None:
    """Refuse a base file that is not the one the checkpoint was trained on."""
    if reference.get("sha256") is None:
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: base weights of this PEFT checkpoint not found; pass --base-weights PATH")
    actual = file_sha256(path)
    if actual != reference["sha256"]:
        raise RuntimeError(
            f"{path}: sha256 {actual[:12]}... is not the base this checkpoint was trained on ({reference['sha256'][:12]}...)"
        )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
