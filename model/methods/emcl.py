"""EMCL-Net: expectation-maximisation contrastive learning over channels.

Reference: jpthu17/EMCL, ``video_retrieval/EMCL-Net``: ``tvr/models/modeling.py`` ``get_logits``
and ``tvr/models/until_module.py`` ``Emcl``; its defaults from ``main_retrieval.py``. The math:
``EMCLNet`` in model/emcl.py (text-conditioned frame pooling, EM over channels, reconstruction,
the running bases).

- ``--emcl`` replaces the pooled cosine by EMCL-Net's similarity (with ``--sim-header seqTransf``
  as EMCL-Net runs it); evaluation scores blocks of 32 x 32 as its code does.
- Padding: ``reference`` multiplies the frame mask in after the softmax, as EMCL-Net does;
  ``masked`` gives padded frames no weight.
- Released checkpoints carry CLIP4Clip's keys only (``--checkpoint-format emcl`` must name them);
  the running bases are not in them and start afresh, as in EMCL-Net after a load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.methods.registry import CheckpointFormat, Method, register
from model.options import option


@dataclass(kw_only=True)
class EMCLOptions:
    emcl: bool = option(False, "EMCL-Net's similarity: text-conditioned frame pooling, EM over channels and reconstruction "
                        "(defaults are EMCL-Net's; use it with --sim-header seqTransf as EMCL-Net does)")  # fmt: skip
    emcl_bases: int = option(32, "EMCL-Net's --centerK: number of bases")
    emcl_iterations: int = option(9, "EMCL-Net's --stage_num (EM rounds, at least 1)")
    emcl_beta: float = option(3.0, "EMCL-Net's --beta: weight of the reconstruction")
    emcl_momentum: float = option(0.9, "EMCL-Net's --momentum of the running bases")
    emcl_lambda: float = option(1.0, "EMCL-Net's --lamd: temperature of the E-step softmax over bases")
    emcl_pool_temperature: float = option(3.0, "EMCL-Net's --temp: temperature of the text-conditioned softmax over frames")


@register
class EMCL(Method):
    name = "emcl"
    title = "EMCL-Net: Expectation-Maximization Contrastive Learning (Jin et al., 2022)"
    reference = "jpthu17/EMCL: video_retrieval/EMCL-Net/tvr/models/modeling.py get_logits, until_module.py Emcl"
    options = EMCLOptions
    architecture_options = ("emcl",)
    checkpoint_format = CheckpointFormat("emcl", not_saved=("similarity.mu",), implied_options=lambda keys: {"emcl": True})

    def is_active(self, config: Any) -> bool:
        return config.emcl

    def problem(self, config: Any) -> str | None:
        if config.interaction != "cosine":
            return "--emcl is its own similarity (EMCL-Net's); it does not combine with --interaction wti/ti"
        if config.emcl_iterations < 1:
            return "--emcl-iterations must be at least 1"
        return None

    def trains_fine_similarity(self, config: Any) -> bool:
        return True

    def reference_format(self, config: Any) -> str | None:
        return "emcl"

    def similarity(self, config: Any, clip: Any, width: int) -> Any:
        from model.emcl import EMCLNet

        return EMCLNet(bases=config.emcl_bases, iterations=config.emcl_iterations, beta=config.emcl_beta, momentum=config.emcl_momentum,
                       lamda=config.emcl_lambda, pool_temperature=config.emcl_pool_temperature,
                       padding_rule=config.resolved_padding_rule())  # fmt: skip
