"""Parameter-efficient tuning of a frozen CLIP: shallow visual prompts and LoRA.

Reference: this project's own (no single authors' code): shallow VPT as DGL's global prompts
(knightyxp/DGL ``modules/clip.py``), LoRA as ``loralib`` writes it (B zero at init, scale
alpha / rank), both registered without touching open_clip's modules. The math: model/peft.py.

- ``--peft prompts``, ``lora`` or ``prompts+lora`` (needs ``--pretrained``: the weights to freeze);
  trained with torch AdamW (``--optimizer auto``). Checkpoints hold only what trains plus the
  frozen base's path and SHA-256.
- Padding: prompts and LoRA change no mask; the head's rule applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.methods.registry import Method, register
from model.options import option


@dataclass(kw_only=True)
class PEFTOptions:
    prompt_tokens: int = option(8, "visual prompt tokens (--peft prompts)")
    lora_rank: int = option(8, "LoRA rank (--peft lora; TempMe's --lora_dim for --peft tempme/dual)")
    lora_alpha: float = option(16.0, "LoRA update scale is alpha / rank (--peft lora; TempMe's LoRA has no scale)")


@register
class PromptsAndLoRA(Method):
    name = "peft"
    title = "Visual prompts and LoRA on a frozen CLIP (parameter-efficient tuning)"
    reference = "knightyxp/DGL modules/clip.py (shallow visual prompts); microsoft/LoRA loralib (LoRA)"
    options = PEFTOptions
    peft_modes = ("prompts", "lora", "prompts+lora")
    optimizer = "adamw"

    def is_active(self, config: Any) -> bool:
        return config.peft in self.peft_modes

    def prepare_clip(self, clip: Any, config: Any) -> None:
        from model.peft import add_lora, add_visual_prompts

        if "prompts" in config.peft:
            add_visual_prompts(clip, config.prompt_tokens)
        if "lora" in config.peft:
            add_lora(clip, config.lora_rank, config.lora_alpha)
