"""The model's options: one dataclass, each field with its help and choices, and the rules that
say which combinations can work (checked once, before anything heavy is built).

``train.config.TrainConfig`` extends it with the training options, so a field is declared once
and a training config *is* a model config; a checkpoint stores the whole training config and
:meth:`ModelConfig.from_stored` reads back the model's part (the evaluator needs no more).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from model.backbone import ACTIVATIONS
from model.heads import HEADS
from model.interaction import INTERACTIONS
from model.peft import PEFT_MODES


def option(default, help: str | None = None, choices: tuple | None = None):  # noqa: A002, ANN001, ANN201 - mirrors argparse
    """A dataclass field carrying its command-line help and choices."""
    return field(default=default, metadata={"help": help, "choices": choices})


def choices_problem(config: object, owner: type) -> str | None:
    """The first field of ``owner`` (a dataclass) whose value in ``config`` is not one of its choices."""
    for f in fields(owner):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            return f"--{f.name.replace('_', '-')} must be one of {choices}, not {getattr(config, f.name)!r}"
    return None


def method_problem(head: str, interaction: str, emcl: bool) -> str | None:
    """Head x similarity combinations that cannot work (the one place this rule lives)."""
    if head not in HEADS:
        return f"--sim-header must be one of {HEADS}"
    if interaction not in INTERACTIONS:
        return f"--interaction must be one of {INTERACTIONS}"
    if head == "tightTransf" and (interaction != "cosine" or emcl):
        return "tightTransf scores pairs with its own cross encoder; --interaction wti/ti and --emcl need meanP, seqLSTM or seqTransf"
    if emcl and interaction != "cosine":
        return "--emcl is its own similarity (EMCL-Net's); it does not combine with --interaction wti/ti"
    return None


@dataclass(kw_only=True)
class ModelConfig:
    model: str | None = option(None, "open_clip architecture (tiny-ViT is a CPU-sized one); omit it with an OpenAI-layout --pretrained "
                               "file, whose weights decide the architecture (a --model that contradicts them is refused)")  # fmt: skip
    pretrained: str | None = option(None, "open_clip tag, or a local file: OpenAI's TorchScript ViT-B-32.pt or a state dict")
    activation: str = option("auto", "auto = QuickGELU for OpenAI-layout files (OpenAI trained with it), the open_clip config's "
                             "choice otherwise; gelu only for open_clip state dicts trained with GELU", ACTIVATIONS)  # fmt: skip
    sim_header: str = option("meanP", "video head: CLIP4Clip's meanP, seqLSTM, seqTransf or the tightTransf cross encoder", HEADS)
    max_frames: int = option(12, "frames per clip the model reads (the builder's frame rule picks them)")
    max_words: int = option(32, "text tokens per caption, start and end tokens included")
    # DRL: token interaction instead of the pooled cosine
    interaction: str = option("cosine", "cosine of pooled vectors, or DRL's weighted (wti) / uniform (ti) token interaction", INTERACTIONS)
    # EMCL-Net's similarity and its defaults
    emcl: bool = option(False, "EMCL-Net's similarity: text-conditioned frame pooling, EM over channels and reconstruction "
                        "(defaults are EMCL-Net's; use it with --sim-header seqTransf as EMCL-Net does)")  # fmt: skip
    emcl_bases: int = option(32, "EMCL-Net's --centerK: number of bases")
    emcl_iterations: int = option(9, "EMCL-Net's --stage_num (EM rounds, at least 1)")
    emcl_beta: float = option(3.0, "EMCL-Net's --beta: weight of the reconstruction")
    emcl_momentum: float = option(0.9, "EMCL-Net's --momentum of the running bases")
    emcl_lambda: float = option(1.0, "EMCL-Net's --lamd: temperature of the E-step softmax over bases")
    emcl_pool_temperature: float = option(3.0, "EMCL-Net's --temp: temperature of the text-conditioned softmax over frames")
    # parameter-efficient tuning of a frozen CLIP
    peft: str = option("none", "freeze CLIP and train visual prompts and/or LoRA (needs --pretrained)", PEFT_MODES)
    prompt_tokens: int = option(8, "visual prompt tokens (--peft prompts)")
    lora_rank: int = option(8, "LoRA rank (--peft lora)")
    lora_alpha: float = option(16.0, "LoRA update scale is alpha / rank")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_stored(cls, stored: dict) -> ModelConfig:
        """This class's fields from a stored config (a checkpoint holds the whole training config).
        Checkpoints written before ``--activation`` replaced ``--force-quick-gelu`` say
        ``force_quick_gelu`` instead."""
        stored = dict(stored)
        if "force_quick_gelu" in stored:
            stored["activation"] = "quickgelu" if stored.pop("force_quick_gelu") else "auto"
        names = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in stored.items() if name in names})

    def emcl_options(self) -> dict | None:
        if not self.emcl:
            return None
        return {"bases": self.emcl_bases, "iterations": self.emcl_iterations, "beta": self.emcl_beta, "momentum": self.emcl_momentum,
                "lamda": self.emcl_lambda, "pool_temperature": self.emcl_pool_temperature}  # fmt: skip

    def problem(self) -> str | None:
        """The first combination of model options that cannot work, said before a model is built."""
        problem = choices_problem(self, ModelConfig) or method_problem(self.sim_header, self.interaction, self.emcl)
        if problem:
            return problem
        if self.emcl and self.emcl_iterations < 1:
            return "--emcl-iterations must be at least 1"
        if self.peft != "none" and not self.pretrained:
            return "--peft freezes CLIP: pass the weights to freeze with --pretrained (a frozen random CLIP learns nothing useful)"
        return None
