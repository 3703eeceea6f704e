"""The training update of each recipe we reproduce: optimiser, parameter groups, schedule, and
the temperature clamp, chosen by ``--optimizer`` (``auto``: the one the method's own code uses).

| name | whose | groups | schedule | logit-scale clamp |
|---|---|---|---|---|
| bertadam | CLIP4Clip, DRL, EMCL-Net, EERCF (``prep_optimizer``) | decay unless the reference's name has ``bias``/``LayerNorm.``; ``clip.`` at lr x coef_lr | inside BertAdam | max ln 100 |
| dgl-adamw | DGL's ``--optim AdamW`` (its msrvtt.sh) | as above, its prompt modules at lr | DGL's ``lr_scheduler('cos')`` before each step | [0.1, 4.6052] |
| tempme-adamw | TempMe (and the dual-attention seed, built on TempMe's code) | every trained parameter, one group | ``get_cosine_schedule_with_warmup`` | max ln 100 |
| adamw | this project's earlier recipe (torch AdamW) | no decay for biases/norms/embeddings/temperature | linear warmup, cosine over the rest | [0, ln 100] |
| xpool-adamw | X-Pool (``train.py``: transformers' AdamW) | ``clip.`` in the name at lr x coef_lr (its clip_lr), the rest at lr (noclip_lr); every parameter decays | ``get_cosine_schedule_with_warmup`` | max ln 100 |

The training loop clips the global gradient norm (``--grad-clip``) before every one of them, as
all five sources do; BertAdam also clips each parameter's gradient alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from model.clip4clip import MAX_LOGIT_SCALE
from model.foreign_checkpoints import reference_format, reference_key
from model.peft import is_trainable_backbone_name
from train.bert_adam import BertAdam
from train.decoupled_adamw import DecoupledAdamW
from train.options import OPTIMIZERS, OptimOptions
from train.schedules import dgl_cosine_lr, project_warmup_cosine, tempme_cosine_with_warmup

# (min, max) of CLIP's logit_scale after every step, as each source clamps it (None: no bound)
LOGIT_SCALE_CLAMP: dict[str, tuple[float | None, float]] = {
    "bertadam": (None, MAX_LOGIT_SCALE),  # torch.clamp_(logit_scale, max=np.log(100))
    "tempme-adamw": (None, MAX_LOGIT_SCALE),
    "dgl-adamw": (0.1, 4.6052),  # DGL main.py: torch.clamp_(logit_scale, 0.1, 4.6052)
    "adamw": (0.0, MAX_LOGIT_SCALE),  # open_clip's training clamp
    "xpool-adamw": (None, MAX_LOGIT_SCALE),  # X-Pool trainer.py: torch.clamp_(logit_scale.data, max=np.log(100))
}
# CLIP4Clip's --freeze_layer_num: these always train, whatever the number (main_task_retrieval.py)
ALWAYS_TRAINED = ("ln_final.", "text_projection", "logit_scale", "visual.ln_post.", "visual.proj")
REFERENCE_NO_DECAY = ("bias", "LayerNorm.bias", "LayerNorm.weight")
PROJECT_NO_DECAY_HINTS = ("bias", "ln_", "norm", "LayerNorm", "positional_embedding", "class_embedding", "logit_scale", "token_embedding")


SCRATCH_MIN_CLIP_LR = 1e-5  # below this a randomly initialised CLIP barely moves in a run of this size


def clip_rate_note(config: OptimOptions) -> tuple[str, bool]:
    """One line on CLIP's own learning rate for the run's log, and whether it needs a warning: a CLIP
    that starts from random weights at a rate scaled for trained weights learns nothing (issue 33)."""
    if getattr(config, "peft", "none") != "none":
        return "CLIP's base weights are frozen (--peft); its added modules train at --lr", False
    rate = config.lr * config.resolved_coef_lr()
    start = "trained weights" if config.starts_from_trained_clip() else "random weights (no --pretrained / --init-from)"
    line = f"CLIP starts from {start} and trains at lr {config.lr:g} x coef_lr {config.resolved_coef_lr():g} = {rate:.2g}"
    if not config.starts_from_trained_clip() and rate < SCRATCH_MIN_CLIP_LR:
        return (f"{line}: too small for random weights, the run will stay near chance; drop --coef-lr (1 from scratch) or pass "
                "--pretrained with CLIP's weights"), True  # fmt: skip
    return line, False


def freeze_lower_layers(clip: nn.Module, freeze_layer_num: int) -> list[str]:
    """CLIP4Clip's freezing (main_task_retrieval.py): below ``freeze_layer_num`` nothing of CLIP's
    input side trains; the top (final norms, projections, temperature) always does. The names frozen."""
    if freeze_layer_num < 0:
        return []
    frozen = []
    for name, parameter in clip.named_parameters():
        if name.startswith(ALWAYS_TRAINED):
            continue
        if name.startswith(("visual.transformer.resblocks.", "transformer.resblocks.")):
            if int(name.split(".resblocks.")[1].split(".")[0]) >= freeze_layer_num:
                continue
        parameter.requires_grad_(False)
        frozen.append(name)
    return frozen


def reference_groups(model: nn.Module, lr: float, coef_lr: float, weight_decay: float, checkpoint_format: str) -> list[dict]:
    """``prep_optimizer``'s four groups, decided on the reference's own parameter names: decay unless
    the name holds ``bias`` / ``LayerNorm.``; ``clip.`` at ``lr * coef_lr`` except PEFT modules
    (DGL's ``new_added_modules``), which train at ``lr``. Frozen parameters are left out (the
    reference lists them, but with no gradient they never move)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(True, True): [], (False, True): [], (True, False): [], (False, False): []}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        theirs = reference_key(name, checkpoint_format) or name
        decays = not any(marker in theirs for marker in REFERENCE_NO_DECAY)
        is_clip = "clip." in theirs and not is_trainable_backbone_name(name)
        groups[(is_clip, decays)].append(parameter)
    return [
        {
            "params": params,
            "lr": lr * coef_lr if is_clip else lr,
            "weight_decay": weight_decay if decays else 0.0,
            "lr_mult": coef_lr if is_clip else 1.0,
            "decay_mult": 1.0 if decays else 0.0,
            "name": f"{'clip' if is_clip else 'new'}{'' if decays else '_no_decay'}",
        }  # fmt: skip
        for (is_clip, decays), params in groups.items()
        if params
    ]


def project_groups(model: nn.Module, lr: float, coef_lr: float, weight_decay: float) -> list[dict]:
    """``--optimizer adamw``: no weight decay for biases, norms, embeddings and the temperature."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_clip = name.startswith("clip.") and not is_trainable_backbone_name(name)
        decays = parameter.ndim >= 2 and not any(hint in name for hint in PROJECT_NO_DECAY_HINTS)
        groups.setdefault((is_clip, decays), []).append(parameter)
    return [
        {
            "params": params,
            "lr": lr * coef_lr if is_clip else lr,
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{'clip' if is_clip else 'new'}{'' if decays else '_no_decay'}",
        }  # fmt: skip
        for (is_clip, decays), params in sorted(groups.items())
    ]


class TrainingUpdate:
    """Optimiser + schedule + clamp of one recipe, stepped in its source's order: the caller has run
    backward and clipped the global norm; ``step`` then updates the weights, the schedule and the
    temperature clamp."""

    def __init__(self, model: nn.Module, config, total_steps: int, fused: bool = False) -> None:  # noqa: ANN001 - a TrainConfig
        self.rule = config.resolved_optimizer()
        self.model, self.total_steps, self.steps_done = model, total_steps, 0
        self.base_lr, self.weight_decay, self.warmup = config.lr, config.weight_decay, config.warmup_fraction
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        if self.rule == "bertadam":
            groups = reference_groups(model, config.lr, config.resolved_coef_lr(), config.weight_decay, reference_format(config))
            self.optimizer: torch.optim.Optimizer = BertAdam(groups, lr=config.lr, t_total=total_steps, warmup=config.warmup_fraction,
                                                             weight_decay=config.weight_decay, max_grad_norm=config.grad_clip)  # fmt: skip
        elif self.rule == "dgl-adamw":
            groups = reference_groups(model, config.lr, config.resolved_coef_lr(), config.weight_decay, reference_format(config))
            self.optimizer = torch.optim.AdamW(
                groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=config.weight_decay, fused=fused
            )
        elif self.rule == "tempme-adamw":
            trained = [p for p in model.parameters() if p.requires_grad]
            self.optimizer = DecoupledAdamW([{"params": trained, "name": "trained"}], lr=config.lr, weight_decay=config.weight_decay)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, tempme_cosine_with_warmup(total_steps, config.warmup_fraction)
            )
        elif self.rule == "xpool-adamw":  # X-Pool's train.py: "clip." in the name -> clip_lr, the rest noclip_lr; all decay
            clip = [p for n, p in model.named_parameters() if p.requires_grad and "clip." in n]
            rest = [p for n, p in model.named_parameters() if p.requires_grad and "clip." not in n]
            groups = [{"params": clip, "lr": config.lr * config.resolved_coef_lr(), "name": "clip"}, {"params": rest, "lr": config.lr, "name": "new"}]
            self.optimizer = DecoupledAdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, tempme_cosine_with_warmup(total_steps, config.warmup_fraction)
            )
        elif self.rule == "adamw":
            groups = project_groups(model, config.lr, config.resolved_coef_lr(), config.weight_decay)
            self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6, fused=fused)
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, project_warmup_cosine(total_steps, config.warmup_fraction))
        else:
            raise ValueError(f"--optimizer {self.rule}: not one of {OPTIMIZERS}")
        self.clamp_range = LOGIT_SCALE_CLAMP[self.rule]

    def step(self, optimizer_step: Callable[[torch.optim.Optimizer], None] | None = None) -> None:
        """``optimizer_step``: how the optimiser steps (train/precision.py: through a GradScaler under amp-fp16)."""
        if self.rule == "dgl-adamw":  # DGL sets lr and decay from the global step before each update
            rate = dgl_cosine_lr(self.base_lr, self.total_steps, self.warmup, self.steps_done)
            for group in self.optimizer.param_groups:
                group["lr"], group["weight_decay"] = rate * group["lr_mult"], self.weight_decay * group["decay_mult"]
        if optimizer_step is None:
            self.optimizer.step()
        else:
            optimizer_step(self.optimizer)
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps_done += 1
        low, high = self.clamp_range
        with torch.no_grad():
            self.model.clip.logit_scale.clamp_(low, high)

    def learning_rate(self) -> float:
        """The new modules' rate for the next update (the largest group's)."""
        if isinstance(self.optimizer, BertAdam):
            return max(self.optimizer.current_lrs())
        if self.rule == "dgl-adamw":
            return dgl_cosine_lr(self.base_lr, self.total_steps, self.warmup, self.steps_done)
        return max(group["lr"] for group in self.optimizer.param_groups)

    def group_learning_rates(self) -> dict[str, float]:
        """Each parameter group's rate for the next update, by the group's name (the card plots them)."""
        if isinstance(self.optimizer, BertAdam):
            rates = self.optimizer.current_lrs()
        elif self.rule == "dgl-adamw":
            rate = dgl_cosine_lr(self.base_lr, self.total_steps, self.warmup, self.steps_done)
            rates = [rate * group["lr_mult"] for group in self.optimizer.param_groups]
        else:
            rates = [group["lr"] for group in self.optimizer.param_groups]
        return {group.get("name", str(i)): rate for i, (group, rate) in enumerate(zip(self.optimizer.param_groups, rates, strict=True))}

    def state_dict(self) -> dict:
        return {"rule": self.rule, "optimizer": self.optimizer.state_dict(), "steps_done": self.steps_done,
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.steps_done = state["steps_done"]
