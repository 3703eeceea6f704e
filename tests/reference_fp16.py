"""Transcription, for tests only, of the fp16 regime CLIP4Clip / DRL / EMCL-Net / EERCF train in:
``convert_weights`` and the ``LayerNorm`` subclass of ArrowLuo/CLIP4Clip ``modules/module_clip.py``
(lines 215-221 and 498-520; DRL's, EMCL-Net's and EERCF's module_clip.py are the same), applied to a
CLIP built by open_clip (the same module types: Conv2d, Linear, MultiheadAttention, ``proj`` and
``text_projection`` parameters)."""

from __future__ import annotations

import torch
from torch import nn


class ReferenceLayerNorm(nn.LayerNorm):
    """Subclass torch's LayerNorm to handle fp16."""

    def forward(self, x: torch.Tensor):
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


def reference_convert_weights(model: nn.Module):
    """Convert applicable model parameters to fp16"""

    def _convert_weights_to_fp16(l):  # noqa: E741 - the reference's name
        if isinstance(l, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            l.weight.data = l.weight.data.half()
            if l.bias is not None:
                l.bias.data = l.bias.data.half()

        if isinstance(l, nn.MultiheadAttention):
            for attr in [*[f"{s}_proj_weight" for s in ["in", "q", "k", "v"]], "in_proj_bias", "bias_k", "bias_v"]:
                tensor = getattr(l, attr)
                if tensor is not None:
                    tensor.data = tensor.data.half()

        for name in ["text_projection", "proj"]:
            if hasattr(l, name):
                attr = getattr(l, name)
                if attr is not None:
                    attr.data = attr.data.half()

    model.apply(_convert_weights_to_fp16)
    for module in model.modules():  # CLIP's own modules are built with its LayerNorm subclass
        if type(module) is not ReferenceLayerNorm and isinstance(module, nn.LayerNorm):
            module.__class__ = ReferenceLayerNorm
