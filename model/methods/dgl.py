"""DGL: dynamic global-local prompt tuning of a frozen CLIP.

Reference: knightyxp/DGL, ``modules/clip.py`` (``ResidualAttentionBlock`` with ``visual=True``,
the shared latent space), ``params.py`` and its ``msrvtt.sh``. The math: ``DGLEncoder`` in
model/dgl.py (local prompts from one generator, global prompts with global-local attention).

- ``--peft dgl`` selects it, with a loose head (meanP) and the cosine: it scores with its global
  video vector. DGL's update is ``dgl-adamw`` (train/optim.py).
- Padding: ``reference`` has no frame mask inside the encoder (the global prompts attend to padded
  frames' tokens), as DGL; ``masked`` hides padded frames from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.methods.registry import Method, register
from model.methods.tempme import blockwise_encoder_problem
from model.options import LOOSE_HEADS, option

DGL_LATENTS = ("linear", "transformer")


@dataclass(kw_only=True)
class DGLOptions:
    dgl_latent: str = option("transformer", "DGL's --shared_latent_space: transformer (its params.py default) or linear (0.83M "
                             "trainable for ViT-B/32, its paper's count)", DGL_LATENTS)  # fmt: skip
    dgl_text_prompts: int = option(8, "DGL's --text_prompt_length (half after the start token, half at the end)")
    dgl_frame_prompts: int = option(4, "DGL's --local_each_frame_prompt_length")
    dgl_global_prompts: int = option(4, "DGL's --global_visual_prompt_length (also the seed's global prompts)")
    dgl_prompt_layers: int = option(12, "DGL's --unified_transformer_layers: layers that get their own local prompts")


def global_vector_problem(config: Any) -> str | None:
    """DGL and the seed score with a global video vector: a loose head and the cosine."""
    if config.sim_header not in LOOSE_HEADS or config.interaction != "cosine" or config.emcl:
        return f"--peft {config.peft} scores with its global video vector: use a loose head (meanP) with the cosine similarity"
    return None


@register
class DGL(Method):
    name = "dgl"
    title = "DGL: Dynamic Global-Local prompt tuning for text-video retrieval (Yang et al., AAAI 2024)"
    reference = "knightyxp/DGL: modules/clip.py, params.py, msrvtt.sh"
    options = DGLOptions
    peft_modes = ("dgl",)
    optimizer = "dgl-adamw"

    def is_active(self, config: Any) -> bool:
        return config.peft == "dgl"

    def problem(self, config: Any) -> str | None:
        return global_vector_problem(config)

    def run_problem(self, config: Any) -> str | None:
        return blockwise_encoder_problem(config)

    def adapter(self, clip: Any, config: Any) -> Any:
        from model.dgl import DGLEncoder

        return DGLEncoder(clip, config.dgl_latent, config.max_frames, config.dgl_text_prompts, config.dgl_frame_prompts,
                          config.dgl_global_prompts, config.dgl_prompt_layers)  # fmt: skip
