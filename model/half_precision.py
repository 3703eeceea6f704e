"""CLIP in fp16 the way CLIP4Clip, DRL, EMCL-Net and EERCF train it (``--precision fp16``).

Their model calls OpenAI CLIP's ``convert_weights(self.clip)``: the weights and biases of every
convolution and linear layer, the attention's input projections and biases, and the
``text_projection`` / ``proj`` matrices become fp16 parameters; everything else of CLIP (token
and positional embeddings, class embedding, LayerNorms, the temperature) stays fp32, and so do the
heads and similarities outside CLIP. Activations run in fp16 (the inputs are cast to CLIP's dtype),
each LayerNorm computes in fp32 and casts back (CLIP's ``LayerNorm`` subclass; open_clip's
``LayerNormFp32`` is the same computation), and the features leave CLIP as fp32 (``.float()``
in their ``get_sequence_output`` / ``get_visual_output``). BertAdam then keeps fp16 moments for the
fp16 parameters and updates them in fp16 arithmetic.
"""

from __future__ import annotations

import torch
from open_clip.transformer import LayerNormFp32
from torch import nn

CONVERTED_ATTRIBUTES = ("text_projection", "proj")
ATTENTION_TENSORS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias", "bias_k", "bias_v")


def convert_weights(clip: nn.Module) -> None:
    """CLIP's fp16 regime in place (keys and shapes unchanged, so checkpoints keep their layout)."""
    for module in clip.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()
        if isinstance(module, nn.MultiheadAttention):
            for name in ATTENTION_TENSORS:
                tensor = getattr(module, name, None)
                if tensor is not None:
                    tensor.data = tensor.data.half()
        for name in CONVERTED_ATTRIBUTES:
            tensor = getattr(module, name, None)
            if isinstance(tensor, torch.Tensor):
                tensor.data = tensor.data.half()
        if isinstance(module, nn.LayerNorm) and not isinstance(module, LayerNormFp32):
            module.__class__ = LayerNormFp32  # the same parameters, computed in fp32 as CLIP's LayerNorm subclass does


def clip_dtype(clip: nn.Module) -> torch.dtype:
    """The dtype CLIP's activations run in: its first convolution's (OpenAI CLIP's ``CLIP.dtype``)."""
    return clip.visual.conv1.weight.dtype


def is_half(clip: nn.Module) -> bool:
    return clip_dtype(clip) == torch.float16


def state_is_half(state: dict[str, torch.Tensor], prefix: str = "clip.") -> bool:
    """Whether a state dict holds CLIP in the fp16 regime (its first convolution is fp16)."""
    weight = state.get(f"{prefix}visual.conv1.weight")
    return weight is not None and weight.dtype == torch.float16
