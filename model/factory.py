"""One place that turns a ModelConfig into a model, used by the trainer and by restore.

Training and evaluation must build exactly the same module tree (same head, interaction,
EMCL and PEFT modules) or a checkpoint will not load; keeping the assembly here means a new
option is wired once.
"""

from __future__ import annotations

from torch import nn

from model.adapters import build_adapter
from model.clip4clip import CLIP4Clip
from model.config import ModelConfig
from model.peft import apply_peft


def assemble_model(clip: nn.Module, config: ModelConfig) -> CLIP4Clip:
    """Head and similarity around ``clip``; then, for PEFT, CLIP frozen and its small modules added
    (after the head is built, so seqTransf's copies of CLIP's text layers stay trainable), and the
    encoder that runs it TempMe's, DGL's or the seed's way (after LoRA, which it runs through)."""
    model = CLIP4Clip(clip, config.sim_header, config.max_frames, config.interaction, config.emcl_options(), config.eercf_weights(),
                      config.resolved_padding_rule())  # fmt: skip
    apply_peft(model.clip, config.peft, config.prompt_tokens, config.lora_rank, config.lora_alpha)
    model.adapter = build_adapter(model.clip, config)
    return model
