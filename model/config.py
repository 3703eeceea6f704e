"""The model's options: CLIP4Clip's core fields plus one options group per method.

``ModelConfig`` is the core (backbone, head, frames, words, padding, the PEFT selector) extended
by every built-in method's options class (model/methods/): a field is declared once, next to
the method that reads it, and the config is flat, so flags, recipes and stored checkpoints name
each option as they always did. ``train.config.TrainConfig`` extends it with the training
options; a checkpoint stores the whole training config and :meth:`ModelConfig.from_stored` reads
back the model's part (the evaluator needs no more), importing the modules of any plug-in
methods it names (``--methods-from``) first.

The rules on which combinations can work are each method's (``Method.problem``); this module
asks every registered method in turn, after the core's own checks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from model.methods import registry
from model.options import ACTIVATIONS, DEFAULT_PADDING_RULE, LOOSE_HEADS, PADDING_RULES, choices_problem, option

HEADS = (*LOOSE_HEADS, *registry.added_choices("heads"))
PEFT_MODES = ("none", *registry.added_choices("peft_modes"))


@dataclass(kw_only=True)
class CoreOptions:
    """CLIP4Clip (Luo et al., 2022; ArrowLuo/CLIP4Clip): the backbone, the video head, frames and words."""

    model: str | None = option(None, "open_clip architecture (tiny-ViT is a CPU-sized one); omit it with an OpenAI-layout --pretrained "
                               "file, whose weights decide the architecture (a --model that contradicts them is refused)")  # fmt: skip
    pretrained: str | None = option(None, "open_clip tag, or a local file: OpenAI's TorchScript ViT-B-32.pt or a state dict; or Hugging Face "
                                    "CLIP weights (a save_pretrained folder, or CLIPModel's state dict) as X-Pool and T-MASS load them")  # fmt: skip
    activation: str = option("auto", "auto = QuickGELU for OpenAI-layout files (OpenAI trained with it), the open_clip config's "
                             "choice otherwise; gelu only for open_clip state dicts trained with GELU", ACTIVATIONS)  # fmt: skip
    sim_header: str = option("meanP", "video head: CLIP4Clip's meanP, seqLSTM, seqTransf or the tightTransf cross encoder", HEADS)
    max_frames: int = option(12, "frames per clip the model reads (the builder's frame rule picks them)")
    max_words: int = option(32, "text tokens per caption, start and end tokens included")
    padding_rule: str | None = option(None, "how padded frames and tokens of short clips and captions count: masked (none of them "
                                      "counts anywhere) or reference (each method's own code exactly: DRL's 0 in the max, EMCL-Net's mask "
                                      "after the softmax, EERCF, DGL and TempMe without a frame mask; model/padding.py). Default: "
                                      "masked for a new run, the imported model's with --init-from (reference for a CLIP4Clip / DRL / "
                                      "EMCL-Net / EERCF file), reference with a published --recipe", (*PADDING_RULES, None))  # fmt: skip
    peft: str = option("none", "freeze CLIP (needs --pretrained) and train: shallow visual prompts and/or LoRA; TempMe (LoRA + token "
                       "merging); DGL (global-local prompts); dual (the dual-attention seed: TempMe + DGL's global prompts)", PEFT_MODES)  # fmt: skip
    methods_from: str | None = option(None, "modules to import first, comma-separated: each registers methods of its own, with their "
                                      "flags (docs/adding-a-method.md); stored with the run, so eval and search import them too")  # fmt: skip


@dataclass(kw_only=True)
class ModelConfig(CoreOptions, *registry.built_in_options()):
    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_stored(cls, stored: dict) -> ModelConfig:
        """This class's fields from a stored config (a checkpoint holds the whole training config),
        with the options of the plug-in methods it names. Checkpoints written before ``--activation``
        replaced ``--force-quick-gelu`` say ``force_quick_gelu`` instead."""
        stored = dict(stored)
        if "force_quick_gelu" in stored:
            stored["activation"] = "quickgelu" if stored.pop("force_quick_gelu") else "auto"
        registry.import_method_modules(stored.get("methods_from"))
        composed = registry.with_registered_options(cls)
        names = {f.name for f in fields(composed)}
        return composed(**{name: value for name, value in stored.items() if name in names})

    def resolved_padding_rule(self) -> str:
        return self.padding_rule or DEFAULT_PADDING_RULE

    def active_methods(self) -> list[registry.Method]:
        return registry.active_methods(self)

    def problem(self) -> str | None:
        """The first combination of model options that cannot work, said before a model is built."""
        problem = choices_problem(self, type(self))
        if problem:
            return problem
        if self.peft != "none" and not self.pretrained:
            return "--peft freezes CLIP: pass the weights to freeze with --pretrained (a frozen random CLIP learns nothing useful)"
        for method in self.active_methods():
            problem = method.problem(self)
            if problem:
                return problem
        return None

    def architecture(self) -> dict[str, Any]:
        """The options that decide the module tree: the head and each method's own."""
        names = (
            "sim_header",
            *(name for m in registry.methods() if isinstance(self, m.options or object) for name in m.architecture_options),
        )
        return {name: getattr(self, name) for name in names}
