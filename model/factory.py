"""One place that turns a ModelConfig into a model, used by the trainer and by restore.

Training and evaluation must build exactly the same module tree (same head, similarity and PEFT
modules) or a checkpoint will not load; keeping the assembly here means a new option is wired
once. What each method adds is the method's (model/methods/): this module names none of them.
"""

from __future__ import annotations

from torch import nn

from model.clip4clip import CLIP4Clip
from model.config import ModelConfig
from model.peft import freeze_clip


def assemble_model(clip: nn.Module, config: ModelConfig) -> CLIP4Clip:
    """Head and similarity around ``clip``; then, for PEFT, CLIP frozen and the active method's
    small modules added (after the head is built, so seqTransf's copies of CLIP's text layers stay
    trainable), and the encoder that runs it its own way (after LoRA, which it runs through)."""
    model = CLIP4Clip(clip, config)
    active = config.active_methods()
    if config.peft != "none":
        freeze_clip(model.clip)
    for method in active:
        method.prepare_clip(model.clip, config)
    adapters = [adapter for method in active if (adapter := method.adapter(model.clip, config)) is not None]
    if len(adapters) > 1:
        raise ValueError("two methods run CLIP their own way; use one of them")
    model.adapter = adapters[0] if adapters else None
    return model
