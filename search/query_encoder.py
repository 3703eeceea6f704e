"""The query's text encoder on the search path: the same model's text tower, made cheaper where that keeps the ranking.

Encoding the query is most of a search's time on a CPU (the first stage takes well under a millisecond
with the approximate index). Two savings, each measured in bench/bench_query_encoder.py:

- **Padding trimmed** (``fp32``, exact). The tokenizer pads every query to ``max_words`` (32); CLIP's text
  transformer is causal (``attn_mask``), so the end token's feature, the only one a coarse score reads,
  never sees the positions after it. The batch is cut after its longest query's end token, which gives
  the same vector up to float rounding for a fraction of the work. Only where the model reads nothing
  else of the text: no per-token similarity (WTI, EMCL, tightTransf, EERCF keep their tokens), no
  adapter with its own text path (TempMe, DGL, the dual seed), a causal mask present.
- **Dynamic int8** (``int8``, weights per output channel): every linear layer of the text transformer (attention projections, made
  plain ``nn.Linear`` by ``LinearSelfAttention``, and MLPs: all its weight multiply-adds) as torch's
  dynamically quantized int8 kernels, on a copy, so the video tower and the model the index was
  checked against are untouched. Not exact: ``auto`` (the default) uses it only
  after checking it on this index (``verify_int8``): on up to ``CHECK_CAPTIONS`` of the index's own
  captions, every query vector's cosine to the fp32 one is at least 0.99 and the top 10 is identical
  for at least 95% of them; otherwise, or for an index with too few captions to tell, fp32.

torch's eager int8 quantization (``torch.ao.quantization.quantize_dynamic``) is marked deprecated in
favour of torchao; it is what runs on a plain CPU torch without compiling, so it is used here with
its warnings silenced, and the check above stands guard over its numbers.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable

import torch
from torch import nn

from model.features import TextFeatures

logger = logging.getLogger(__name__)
CHECK_CAPTIONS = 200
MIN_CHECK_CAPTIONS = 20
MIN_COSINE = 0.99
MIN_SAME_TOP10 = 0.95


def trims_padding(model: nn.Module) -> bool:
    """Whether only the end token's feature is read, by a plain causal CLIP text tower (module docstring)."""
    plain_text = model.adapter is None or not hasattr(model.adapter, "encode_text")
    return plain_text and not model.similarity.keeps_text_tokens and getattr(model.clip, "attn_mask", None) is not None


def trimmed(tokens: torch.Tensor) -> torch.Tensor:
    """The tokens cut after the batch's last end token (CLIP's end token has the largest id)."""
    return tokens[:, : int(tokens.argmax(dim=-1).max()) + 1]


class LinearSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention, as CLIP's text blocks call it) with its packed input
    projection split into three ``nn.Linear`` and its output projection a plain one, so that dynamic
    quantization reaches them (it converts ``nn.Linear`` modules only). The same weights, the same
    arithmetic: ``F.scaled_dot_product_attention`` over the heads."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        width, self.heads, self.batch_first = attention.embed_dim, attention.num_heads, attention.batch_first
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        bias = attention.in_proj_bias if attention.in_proj_bias is not None else torch.zeros(3 * width)
        for i, linear in enumerate((self.q, self.k, self.v)):
            linear.weight.data.copy_(attention.in_proj_weight.data[i * width : (i + 1) * width])
            linear.bias.data.copy_(bias.data[i * width : (i + 1) * width])
        self.out = nn.Linear(width, width)
        self.out.weight.data.copy_(attention.out_proj.weight.data)
        self.out.bias.data.copy_(attention.out_proj.bias.data)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:  # fmt: skip
        if key is not query or value is not query:
            raise ValueError("LinearSelfAttention computes self-attention only (CLIP's text blocks)")
        x = query if self.batch_first else query.transpose(0, 1)
        batch, length, width = x.shape
        heads = [p(x).view(batch, length, self.heads, width // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v)]
        mixed = torch.nn.functional.scaled_dot_product_attention(*heads, attn_mask=attn_mask)
        out = self.out(mixed.transpose(1, 2).reshape(batch, length, width))
        return (out if self.batch_first else out.transpose(0, 1)), None


def int8_text_model(model: nn.Module) -> nn.Module:
    """A view of ``model`` whose CLIP text transformer is a dynamically quantized int8 copy (every linear
    layer: attention projections and MLPs); every other module (the vision tower, the heads) is the
    model's own, shared, not copied."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices (module docstring)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        transformer = copy.deepcopy(model.clip.transformer).float().eval()
        for block in getattr(transformer, "resblocks", []):
            if isinstance(block.attn, nn.MultiheadAttention):
                block.attn = LinearSelfAttention(block.attn)
        # one scale per output channel: closer to fp32 than one per tensor, at the same speed (bench/bench_query_encoder.py)
        transformer = quantize_dynamic(transformer, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
    clip = copy.copy(model.clip)
    clip._modules = {**model.clip._modules, "transformer": transformer}
    view = copy.copy(model)
    view._modules = {**model._modules, "clip": clip}
    return view


class QueryEncoder:
    """Token ids -> the model's text features, by the chosen path (``kind``: fp32 or int8; see the module)."""

    def __init__(self, model: nn.Module, kind: str = "fp32") -> None:
        if kind not in ("fp32", "int8"):
            raise ValueError(f"query encoder {kind!r}: fp32 or int8")
        self.kind, self.trim = kind, trims_padding(model)
        self.model = int8_text_model(model) if kind == "int8" else model

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor, autocast: Callable[[], object]) -> TextFeatures:
        tokens = trimmed(tokens) if self.trim else tokens
        if self.kind == "int8":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                features = self.model.encode_text(tokens)  # int8 kernels run outside autocast
        else:
            with autocast():
                features = self.model.encode_text(tokens)
        return TextFeatures(features.pooled.float(), None if features.tokens is None else features.tokens.float(), features.mask)
