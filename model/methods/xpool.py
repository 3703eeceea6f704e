"""X-Pool: cross-modal language-video attention, one pooled video vector per caption.

Reference: layer6ai-labs/xpool (Gorti et al., CVPR 2022): ``modules/transformer.py`` (the pooling),
``model/clip_transformer.py`` (CLIP's frame features pooled by the caption's), ``modules/loss.py``
(CLIP's symmetric loss over that matrix), ``modules/metrics.py`` (``sim_matrix_training`` /
``sim_matrix_inference``), ``train.py`` and ``config/all_config.py`` (its update and defaults). The
math: model/xpool.py.

- ``--xpool`` (with ``--sim-header meanP``, whose frame sequence is CLIP's frame features as X-Pool
  reads them): the pooled cosine is replaced by X-Pool's text-conditioned pooling. ``--xpool-heads``
  is its ``num_mha_heads`` (1), ``--xpool-dropout`` its ``transformer_dropout`` (0.3).
- Its update (``--optimizer auto`` = ``xpool-adamw``): transformers-style AdamW, CLIP at ``--lr x
  --coef-lr`` (its ``clip_lr``), the pooling at ``--lr`` (its ``noclip_lr``), weight decay 0.2 on every
  parameter, warmup 0.1 then cosine, global-norm clip 1.0, temperature clamped to ln 100.
- Evaluation scores every caption against every video's caption-conditioned vector, in blocks
  (bounded memory at any split size); search ranks by the mean-pooled video vector first and
  rescores the top ``--rerank-topk`` with X-Pool's pooling (EERCF's two stages).
- Padding: X-Pool's loader never pads; ``masked`` keeps padded frames out of the attention,
  ``reference`` runs its softmax over every delivered frame.
- Where the code and the paper differ, the code is followed; where this project differs: X-Pool
  tokenises with Hugging Face's CLIP tokenizer padded to the batch's longest caption, this project
  with open_clip's to ``--max-words`` (the same ids for captions shorter than that: the end token's
  feature is what both read); X-Pool keeps its best checkpoint by evaluating on the test split,
  ``--keep-best`` chooses on ``--val-shards``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.methods.registry import CheckpointFormat, Method, register
from model.options import option


@dataclass(kw_only=True)
class XPoolOptions:
    xpool: bool = option(False, "X-Pool's text-conditioned pooling of frames (use it with --sim-header meanP; optimiser xpool-adamw)")
    xpool_heads: int = option(1, "X-Pool's --num_mha_heads: heads of the caption-to-frames attention")
    xpool_dropout: float = option(0.3, "X-Pool's --transformer_dropout (its README: 0.3 for MSR-VTT 9k and LSMDC, 0.4 for 7k and MSVD)")


def clip_frames_problem(flag: str, config: Any) -> str | None:
    """What X-Pool and T-MASS share: they pool CLIP's own frame features (meanP's sequence), alone."""
    if config.sim_header != "meanP" or config.interaction != "cosine" or config.emcl or config.eercf or config.peft != "none":
        return f"{flag} pools CLIP's own frame features: use it with --sim-header meanP, no other similarity and no --peft"
    return None


@register
class XPool(Method):
    name = "xpool"
    title = "X-Pool: Cross-Modal Language-Video Attention (Gorti et al., CVPR 2022)"
    reference = "layer6ai-labs/xpool: modules/transformer.py, model/clip_transformer.py, modules/loss.py, train.py"
    options = XPoolOptions
    optimizer = "xpool-adamw"
    architecture_options = ("xpool",)
    # its released model_best.pth: {"state_dict": ...} with CLIP in Hugging Face's layout under clip.* (model/hf_clip.py)
    # and the pooling under pool_frames.*; num_mha_heads cannot be read off the weights (its releases use 1)
    checkpoint_format = CheckpointFormat(
        "xpool",
        rows=(*((f"similarity.pool.{p}_proj.", f"pool_frames.cross_attn.{p}_proj.") for p in ("q", "k", "v", "out")),
              ("similarity.pool.linear_proj.", "pool_frames.linear_proj."),
              *((f"similarity.pool.layer_norm{i}.", f"pool_frames.layer_norm{i}.") for i in (1, 2, 3))),  # fmt: skip
        markers=("pool_frames.",),
        implied_options=lambda keys: {"xpool": True},
    )

    def is_active(self, config: Any) -> bool:
        return config.xpool

    def problem(self, config: Any) -> str | None:
        problem = clip_frames_problem("--xpool", config)
        if problem:
            return problem
        if config.xpool_heads < 1 or not 0 <= config.xpool_dropout < 1:
            return "--xpool-heads must be at least 1 and --xpool-dropout in [0, 1)"
        return None

    def trains_fine_similarity(self, config: Any) -> bool:
        return True

    def similarity(self, config: Any, clip: Any, width: int) -> Any:
        from model.xpool import XPoolSimilarity

        return XPoolSimilarity(width, config.xpool_heads, config.xpool_dropout, config.resolved_padding_rule())
