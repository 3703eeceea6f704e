"""EERCF: efficient and effective coarse-to-fine retrieval over video, frame and patch granularities.

Reference: adxcreative/EERCF, ``modules/modeling_fineclip_patches_cdcl.py`` ``_loose_similarity``
and ``main_eercf.py`` (``train_epoch``, ``eval_epoch``; its flags and defaults). The math:
``EERCFSimilarity`` in model/eercf.py, which returns EERCF's weak and strong logits and its
Pearson constraints; the objective adds them with the weights below.

- ``--eercf`` (with ``--sim-header seqTransf``): EERCF's similarity and objective; evaluate with
  ``--rerank-topk 50``, its two-stage search (eval/rerank.py).
- Padding: ``reference`` runs the frame and patch softmaxes and sums without a frame mask, as
  EERCF does; ``masked`` excludes padded frames and their patches.
- Released checkpoints: CLIP4Clip's seqTransf plus ``global_mat_weight`` and ``frame_logit_weight``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from model.methods.registry import CheckpointFormat, Method, register
from model.options import option

if TYPE_CHECKING:
    from model.eercf import EERCFWeights


@dataclass(kw_only=True)
class EERCFOptions:
    eercf: bool = option(False, "EERCF's similarity and objective (modules/modeling_fineclip_patches_cdcl.py; needs --sim-header "
                         "seqTransf); evaluate with --rerank-topk 50, its two-stage search")  # fmt: skip
    eercf_video_weight: float = option(0.5, "EERCF's --video_weight (video score in the weak logits)")
    eercf_weakframe_weight: float = option(0.5, "EERCF's --weakframe_weight")
    eercf_strongframe_weight: float = option(1.0, "EERCF's --strongframe_weight (frame strong in the strong logits)")
    eercf_weakpatch_weight: float = option(0.05, "EERCF's --weakpatch_weight")
    eercf_strongpatch_weight: float = option(0.0, "EERCF's --strongpatch_weight")
    eercf_weak_loss_weight: float = option(0.8, "EERCF's --weak_loss_weight")
    eercf_strong_loss_weight: float = option(0.2, "EERCF's --strong_loss_weight")
    eercf_cdcl_loss_weight: float = option(0.001, "EERCF's --cdcl_loss_weight (its Pearson constraints)")
    eercf_cdcl_video_weight: float = option(1.0, "EERCF's --cdcl_video_weight")
    eercf_cdcl_frame_weight: float = option(1.0, "EERCF's --cdcl_frame_weight")
    eercf_cdcl_patch_weight: float = option(0.0, "EERCF's --cdcl_patch_weight")

    def eercf_weights(self) -> EERCFWeights:
        """The weights as model/eercf.py reads them (each ``eercf_<name>_weight`` flag is its ``<name>``)."""
        from model.eercf import EERCFWeights

        return EERCFWeights(**{f.name: getattr(self, f"eercf_{f.name}_weight") for f in fields(EERCFWeights)})


@register
class EERCF(Method):
    name = "eercf"
    title = "EERCF: Efficient and Effective Coarse-to-Fine retrieval (Tian et al., AAAI 2024)"
    reference = "adxcreative/EERCF: modules/modeling_fineclip_patches_cdcl.py _loose_similarity, main_eercf.py"
    options = EERCFOptions
    architecture_options = ("eercf",)
    checkpoint_format = CheckpointFormat(
        "eercf",
        rows=(("similarity.global_mat_weight", "global_mat_weight"), ("similarity.frame_logit_weight", "frame_logit_weight")),
        markers=("global_mat_weight", "frame_logit_weight"),
        implied_options=lambda keys: {"eercf": True},
    )

    def is_active(self, config: Any) -> bool:
        return config.eercf

    def problem(self, config: Any) -> str | None:
        if config.sim_header != "seqTransf" or config.interaction != "cosine" or config.emcl:
            return "--eercf is EERCF's own similarity on a seqTransf head: use --sim-header seqTransf without --interaction or --emcl"
        if config.peft in ("tempme", "dgl", "dual"):
            return f"--eercf reads every frame's patch tokens; --peft {config.peft} runs CLIP its own way (merged or prompted tokens)"
        return None

    def reference_format(self, config: Any) -> str | None:
        return "eercf"

    def similarity(self, config: Any, clip: Any, width: int) -> Any:
        from model import vit_blocks
        from model.eercf import EERCFSimilarity

        vit_blocks.check_plain_vit(clip.visual, "EERCF's patch tokens")  # read after ln_post, as the class token is
        return EERCFSimilarity(width, config.max_frames, config.eercf_weights(), config.resolved_padding_rule())
