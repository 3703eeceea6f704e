"""tightTransf: CLIP4Clip's cross encoder, which scores a caption and a video together.

Reference: ArrowLuo/CLIP4Clip, ``modules/modeling.py`` ``_cross_similarity`` and
``modules/module_cross.py`` (the math: ``CrossEncoderScore`` in model/heads.py). Selected by
``--sim-header tightTransf``; it has no video head, so its coarse (search) vector is the mean of
CLIP's frame features. Padding: CLIP4Clip masks padded frames in its own code, so both
``--padding-rule`` values give the same numbers. Its released checkpoints are CLIP4Clip's
``pytorch_model.bin.N`` (the ``clip4clip`` format, whose other heads share every key with DRL and
EMCL-Net: only the cross encoder's keys tell CLIP4Clip's files apart).
"""

from __future__ import annotations

from typing import Any

from model.methods.registry import CheckpointFormat, Method, register

HEAD = "tightTransf"


def _implied_head(keys: set[str]) -> dict:
    return {"sim_header": HEAD} if any(key.startswith(("cross.", "similarity_dense.")) for key in keys) else {}


@register
class TightTransf(Method):
    name = "tightTransf"
    title = "CLIP4Clip's tightTransf cross encoder (Luo et al., 2022)"
    reference = "ArrowLuo/CLIP4Clip: modules/modeling.py _cross_similarity, modules/module_cross.py"
    heads = (HEAD,)
    checkpoint_format = CheckpointFormat(
        "clip4clip",
        rows=(
            ("similarity.position.weight", "cross.embeddings.position_embeddings.weight"),
            ("similarity.blocks.", "cross.transformer.resblocks."),
            ("similarity.pool_norm.", "cross.pooler.ln_pool."),
            ("similarity.pool_dense.", "cross.pooler.dense."),
            ("similarity.score.", "similarity_dense."),
        ),  # fmt: skip
        markers=("cross.", "similarity_dense."),
        implied_options=_implied_head,
    )

    def is_active(self, config: Any) -> bool:
        return config.sim_header == HEAD

    def problem(self, config: Any) -> str | None:
        if config.interaction != "cosine" or config.emcl:
            return "tightTransf scores pairs with its own cross encoder; --interaction wti/ti and --emcl need meanP, seqLSTM or seqTransf"
        return None

    def trains_fine_similarity(self, config: Any) -> bool:
        return True

    def similarity(self, config: Any, clip: Any, width: int) -> Any:
        from model.heads import CrossEncoderScore

        return CrossEncoderScore(clip, width, config.max_frames)
