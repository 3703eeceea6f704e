"""One place that turns a TrainConfig into a model, used by the trainer and by restore.

Training and evaluation must build exactly the same module tree (same head, interaction,
EMCL and PEFT modules) or a checkpoint will not load; keeping the assembly here means a new
option is wired once.
"""

from __future__ import annotations

from torch import nn

from train.config import TrainConfig
from train.model import CLIP4Clip
from train.peft import apply_peft


def emcl_options(config: TrainConfig) -> dict | None:
    if not config.emcl:
        return None
    return {
        "bases": config.emcl_bases,
        "iterations": config.emcl_iterations,
        "beta": config.emcl_beta,
        "momentum": config.emcl_momentum,
        "lamda": config.emcl_lambda,
        "pool_temperature": config.emcl_pool_temperature,
    }


def assemble_model(clip: nn.Module, config: TrainConfig) -> CLIP4Clip:
    """Head and similarity around ``clip``; then, for PEFT, CLIP frozen and its small modules added
    (after the head is built, so seqTransf's copies of CLIP's text layers stay trainable)."""
    model = CLIP4Clip(clip, config.sim_header, config.max_frames, config.interaction, emcl_options(config))
    apply_peft(model.clip, config.peft, config.prompt_tokens, config.lora_rank, config.lora_alpha)
    return model
