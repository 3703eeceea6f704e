"""The model's options: one dataclass, each field with its help and choices, and the rules that
say which combinations can work (checked once, before anything heavy is built).

``train.config.TrainConfig`` extends it with the training options, so a field is declared once
and a training config *is* a model config; a checkpoint stores the whole training config and
:meth:`ModelConfig.from_stored` reads back the model's part (the evaluator needs no more).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from model.backbone import ACTIVATIONS
from model.dgl import DGL_LATENTS
from model.dual_attention import SeedFlags, SeedPlan, interpret
from model.eercf import EERCFWeights
from model.heads import HEADS
from model.interaction import INTERACTIONS
from model.padding import DEFAULT_PADDING_RULE, PADDING_RULES
from model.peft import PEFT_MODES
from model.tempme import MergeSchedule, merge_percentages, schedule_from_flags


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


def method_problem(head: str, interaction: str, emcl: bool, eercf: bool = False) -> str | None:
    """Head x similarity combinations that cannot work (the one place this rule lives)."""
    if eercf and (head != "seqTransf" or interaction != "cosine" or emcl):
        return "--eercf is EERCF's own similarity on a seqTransf head: use --sim-header seqTransf without --interaction or --emcl"
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
    padding_rule: str | None = option(None, "how padded frames and tokens of short clips and captions count: masked (none of them "
                                      "counts anywhere) or reference (each method's own code exactly: DRL's 0 in the max, EMCL-Net's mask "
                                      "after the softmax, EERCF, DGL and TempMe without a frame mask; model/padding.py). Default: "
                                      "masked for a new run, the imported model's with --init-from (reference for a CLIP4Clip / DRL / "
                                      "EMCL-Net / EERCF file), reference with a published --recipe", (*PADDING_RULES, None))  # fmt: skip
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
    # EERCF's model: video, frame and patch granularities, text-gated interaction, Pearson constraints
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
    # parameter-efficient tuning of a frozen CLIP
    peft: str = option("none", "freeze CLIP (needs --pretrained) and train: shallow visual prompts and/or LoRA; TempMe (LoRA + token "
                       "merging); DGL (global-local prompts); dual (the dual-attention seed: TempMe + DGL's global prompts)", PEFT_MODES)  # fmt: skip
    prompt_tokens: int = option(8, "visual prompt tokens (--peft prompts)")
    lora_rank: int = option(8, "LoRA rank (--peft lora; TempMe's --lora_dim for --peft tempme/dual)")
    lora_alpha: float = option(16.0, "LoRA update scale is alpha / rank (--peft lora; TempMe's LoRA has no scale)")
    # TempMe (--peft tempme, and the seed's merging)
    tome_r: int = option(2, "TempMe's --tome_r: tokens merged per layer within each frame before the first merge layer")
    merge_layers: str = option("8-9-10", "TempMe's --merge_layer: layers (0-based) where frames join into segments")
    merge_frames: str = option("2-2-3", "TempMe's --merge_frame_num: groups joined at each merge layer (12 -> 6 -> 3 -> 1)")
    merge_token_proportion: str = option("30-10", "TempMe's --merge_token_proportion: % merged across joined frames, % within groups")
    frame_pos: bool = option(True, "TempMe's --frame_pos: learned per-frame embedding added where frames join")
    # DGL (--peft dgl)
    dgl_latent: str = option("transformer", "DGL's --shared_latent_space: transformer (its params.py default) or linear (0.83M "
                             "trainable for ViT-B/32, its paper's count)", DGL_LATENTS)  # fmt: skip
    dgl_text_prompts: int = option(8, "DGL's --text_prompt_length (half after the start token, half at the end)")
    dgl_frame_prompts: int = option(4, "DGL's --local_each_frame_prompt_length")
    dgl_global_prompts: int = option(4, "DGL's --global_visual_prompt_length (also the seed's global prompts)")
    dgl_prompt_layers: int = option(12, "DGL's --unified_transformer_layers: layers that get their own local prompts")
    # the dual-attention seed (--peft dual): its flags, read by model/dual_attention.py
    frame_per_seg: str = option("2-4-12", "the seed's --frame_per_seg: frames per segment at each segment layer")
    seg_num: str = option("6-3-1", "the seed's --seg_num: segments at each segment layer")
    seg_layer: str = option("8-9-10", "the seed's --seg_layer: layers where the segments form")
    sel_layer: int = option(6, "the seed's --sel_layer: layer where the global prompts join (dual attention from there on)")
    alpha: float = option(0.4, "the seed's --alpha: score = alpha cos(text, global) + (1 - alpha) cos(text, frame-level)")

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

    def resolved_padding_rule(self) -> str:
        return self.padding_rule or DEFAULT_PADDING_RULE

    def emcl_options(self) -> dict | None:
        if not self.emcl:
            return None
        return {"bases": self.emcl_bases, "iterations": self.emcl_iterations, "beta": self.emcl_beta, "momentum": self.emcl_momentum,
                "lamda": self.emcl_lambda, "pool_temperature": self.emcl_pool_temperature}  # fmt: skip

    def eercf_weights(self) -> EERCFWeights | None:
        if not self.eercf:
            return None
        return EERCFWeights(**{f.name: getattr(self, f"eercf_{f.name}_weight") for f in fields(EERCFWeights)})

    def merge_schedule(self) -> MergeSchedule:
        """TempMe's schedule from its flags (--peft tempme)."""
        return schedule_from_flags(self.tome_r, self.merge_layers, self.merge_frames, self.merge_token_proportion, self.frame_pos)

    def seed_plan(self) -> SeedPlan:
        """The dual-attention seed's flags as read by model/dual_attention.py (--peft dual)."""
        cross, intra = merge_percentages(self.merge_token_proportion)
        flags = SeedFlags(self.frame_per_seg, self.seg_num, self.seg_layer, self.sel_layer, self.alpha)
        return interpret(flags, self.max_frames, self.tome_r, cross, intra, self.frame_pos)

    def problem(self) -> str | None:
        """The first combination of model options that cannot work, said before a model is built."""
        problem = choices_problem(self, ModelConfig) or method_problem(self.sim_header, self.interaction, self.emcl, self.eercf)
        if problem:
            return problem
        if self.emcl and self.emcl_iterations < 1:
            return "--emcl-iterations must be at least 1"
        if self.peft != "none" and not self.pretrained:
            return "--peft freezes CLIP: pass the weights to freeze with --pretrained (a frozen random CLIP learns nothing useful)"
        if self.peft in ("tempme", "dual"):
            try:
                schedule = self.merge_schedule() if self.peft == "tempme" else self.seed_plan().schedule
            except ValueError as error:
                return str(error)
            schedule_problem = schedule.problem(self.max_frames)  # the depth is checked when CLIP is loaded
            if schedule_problem:
                return schedule_problem
        if self.eercf and self.peft in ("tempme", "dgl", "dual"):
            return f"--eercf reads every frame's patch tokens; --peft {self.peft} runs CLIP its own way (merged or prompted tokens)"
        if self.peft in ("dgl", "dual") and (self.sim_header == "tightTransf" or self.interaction != "cosine" or self.emcl):
            return f"--peft {self.peft} scores with its global video vector: use a loose head (meanP) with the cosine similarity"
        return None
