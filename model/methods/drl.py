"""DRL: token interaction (WTI / TI) and channel decorrelation (CDCR).

Reference: foolwood/DRL, ``tvr/models/modeling.py`` (``wti_interaction``, ``dp_interaction``,
``cdcr_loss``) and ``tvr/models/until_module.py``; its flags from ``main.py`` and ``msrvtt.sh``.
The math: ``TokenInteraction`` in model/interaction.py, the CDCR terms in model/cdcr.py.

- ``--interaction wti|ti`` replaces the pooled cosine by DRL's token-by-frame interaction;
  ``cosine`` with ``--cdcr`` is DRL's ``dp``.
- ``--cdcr`` adds DRL's decorrelation of matched caption and video channels to the loss.
- Padding: ``masked`` keeps padded tokens and frames out of every max; ``reference`` is DRL's own
  rule (cosines multiplied by both masks, so a padded slot scores 0 and can win a max of negative
  cosines).
- Released checkpoints: ``text_weight_fc`` / ``video_weight_fc`` are WTI's weight MLPs (DRL's
  default ``wti_arch 2``); a TI or dp file has CLIP4Clip's keys only, so ``--checkpoint-format drl``
  must name it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.methods.registry import CheckpointFormat, Method, register
from model.options import LOOSE_HEADS, option

INTERACTIONS = ("cosine", "wti", "ti")
CDCR_MODES = (0, 1, 2, 3)


@dataclass(kw_only=True)
class DRLOptions:
    interaction: str = option("cosine", "cosine of pooled vectors, or DRL's weighted (wti) / uniform (ti) token interaction", INTERACTIONS)
    cdcr: int = option(0, "DRL's --cdcr: 0 off; with --interaction cosine any other value decorrelates the pooled vectors (DRL's dp); "
                       "with ti/wti 1: a random token and frame per pair, 2: matched tokens and frames, 3: the same weighted by WTI",
                       CDCR_MODES)  # fmt: skip
    cdcr_weight: float = option(0.001, "DRL's --cdcr_lambda: weight of the CDCR term in the loss")
    cdcr_alpha1: float = option(1.0, "DRL's --cdcr_alpha1: weight of the diagonal term (its main.py default; msrvtt.sh sets 0.11-0.16)")
    cdcr_alpha2: float = option(0.06, "DRL's --cdcr_alpha2: weight of the off-diagonal term (its main.py default; msrvtt.sh sets 0)")


def _implied_interaction(keys: set[str]) -> dict:
    weighted = any(key.startswith("text_weight_fc.") for key in keys)
    if weighted and any(key.startswith("text_weight_fc.4.") for key in keys) or "text_weight_fc.weight" in keys:
        raise ValueError("DRL checkpoint with wti_arch 1 or 3; only DRL's default wti_arch 2 is built here")
    return {"interaction": "wti" if weighted else "ti"}


@register
class DRL(Method):
    name = "drl"
    title = "DRL: Disentangled Representation Learning for Text-Video Retrieval (Wang et al., 2022)"
    reference = "foolwood/DRL: tvr/models/modeling.py (wti_interaction, cdcr_loss), main.py, msrvtt.sh"
    options = DRLOptions
    architecture_options = ("interaction",)
    checkpoint_format = CheckpointFormat(
        "drl",
        rows=(("similarity.text_weights.mlp.", "text_weight_fc."), ("similarity.frame_weights.mlp.", "video_weight_fc.")),
        markers=("text_weight_fc.", "video_weight_fc."),
        implied_options=_implied_interaction,
    )

    def is_active(self, config: Any) -> bool:
        return config.interaction != "cosine" or bool(config.cdcr)

    def run_problem(self, config: Any) -> str | None:
        if config.cdcr and (config.sim_header not in LOOSE_HEADS or config.emcl or config.eercf):
            return "--cdcr is DRL's regulariser of its dp/ti/wti similarities: drop it for tightTransf, EMCL and EERCF"
        if config.cdcr == 3 and config.interaction == "ti":
            return "--cdcr 3 weighs by WTI's token weights, which --interaction ti does not have (DRL's code stops there): use --cdcr 2"
        return None

    def trains_fine_similarity(self, config: Any) -> bool:
        return config.interaction != "cosine"

    def reference_format(self, config: Any) -> str | None:
        return "drl" if config.interaction != "cosine" else None

    def similarity(self, config: Any, clip: Any, width: int) -> Any:
        if config.interaction == "cosine":
            return None
        from model.interaction import TokenInteraction

        return TokenInteraction(width, weighted=config.interaction == "wti", padding_rule=config.resolved_padding_rule())

    def loss_terms(self, model: Any, text: Any, video: Any, scores: Any, config: Any) -> list:
        if not config.cdcr:
            return []
        import torch.nn.functional as F

        from model.cdcr import pooled_cdcr, token_cdcr

        if scores.token_sides is not None:
            cdcr = token_cdcr(*scores.token_sides, config.cdcr, config.cdcr_alpha1, config.cdcr_alpha2)
        else:  # DRL's dp_interaction: the normalised pooled vectors
            cdcr = pooled_cdcr(F.normalize(text.pooled.float(), dim=-1), video.pooled.float(), config.cdcr_alpha1, config.cdcr_alpha2)
        return [("cdcr", config.cdcr_weight, cdcr)]
