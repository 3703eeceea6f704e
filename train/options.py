"""The training options that are not the model's: the data stream's, the update's and the loss's.

They live apart from the code that reads them (train/data.py, train/optim.py, train/objective.py,
train/precision.py) for one reason: ``python -m train --help`` and an argument error must answer
without importing torch (seconds), and those modules import it. ``TrainConfig`` (train/config.py)
extends these classes; each option is declared once, here or in its method's module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from model.methods import registry
from model.options import option

MAX_DEFAULT_WORKERS = 4
PRECISIONS = ("auto", "bf16", "fp32", "fp16", "amp-fp16")  # train/precision.py says what each does
PRETRAINED_COEF_LR = 1e-3  # CLIP4Clip's --coef_lr: CLIP trains at lr x 1e-3 when it starts from trained weights
OPTIMIZERS = ("auto", "bertadam", "dgl-adamw", "tempme-adamw", "adamw", "xpool-adamw")  # train/optim.py builds each
DEFAULT_OPTIMIZER = "bertadam"  # CLIP4Clip's, DRL's, EMCL-Net's and EERCF's; a method may name its own (Method.optimizer)


def default_workers(environ: dict | None = None) -> int:
    """The cores this process may run on (torch's own measure when it warns), shared by the ranks
    torchrun started on this node, at most ``MAX_DEFAULT_WORKERS`` and at least one."""
    environ = os.environ if environ is None else environ
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local_ranks = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_DEFAULT_WORKERS, cores // local_ranks))


@dataclass(kw_only=True)
class DataOptions:
    """The data stream (train/data.py): captions, shuffling, workers and where JPEGs are decoded."""

    caption_mode: str = option("random", "random: one random caption per video per visit; expand: every caption is a sample",
                               ("random", "expand"))  # fmt: skip
    shuffle_buffer: int = option(500, "samples held for shuffling, per worker")
    workers: int | None = option(None, f"data loader processes per rank (default: up to {MAX_DEFAULT_WORKERS}, no more than this rank's "
                                 "share of the node's CPU cores, so torch never warns of too many workers)")  # fmt: skip
    resampled: bool = option(True, "draw shards with replacement (never uneven across ranks); --no-resampled splits shards")
    decode_on: str = option("worker", "worker: CPU JPEG decoding in the data workers (default); device: workers ship JPEG bytes and "
                            "the training device decodes each batch (nvJPEG on a GPU), for GPUs with few CPU cores", ("worker", "device"))  # fmt: skip

    def resolved_workers(self) -> int:
        return self.workers if self.workers is not None else default_workers()

    def data_options(self) -> dict:
        """These options' values, to build a ``StreamConfig`` from a ``TrainConfig``."""
        return {f.name: getattr(self, f.name) for f in fields(DataOptions)}


@dataclass(kw_only=True)
class OptimOptions:
    """The update (train/optim.py): optimiser, learning rates, schedule and clipping; defaults are CLIP4Clip's."""

    optimizer: str = option("auto", "auto: the method's own (BertAdam for the CLIP4Clip family, DGL's AdamW for --peft dgl, TempMe's "
                            "AdamW for --peft tempme/dual, torch AdamW for --peft lora/prompts, X-Pool's for --xpool); or name one "
                            "(train/optim.py)",
                            OPTIMIZERS)  # fmt: skip
    lr: float = option(1e-4, "learning rate of the modules outside CLIP (head, similarity; PEFT modules)")
    coef_lr: float | None = option(None, "CLIP's learning rate is lr x coef_lr. Default: 1e-3 when CLIP starts from trained weights "
                                   "(--pretrained, --init-from: CLIP4Clip's 1e-7 at lr 1e-4), 1 when it starts from random weights "
                                   "(scaled down 1000x they barely move and the run learns nothing)")  # fmt: skip
    weight_decay: float = option(0.2)
    warmup_fraction: float = option(0.1, "warmup fraction of the steps (CLIP4Clip's --warmup_proportion)")
    grad_clip: float = option(1.0, "global gradient norm clip before each step (0: off); BertAdam also clips each parameter to it")
    freeze_layer_num: int | None = option(None, "CLIP4Clip's --freeze_layer_num: freeze CLIP's patch/token embeddings, positional "
                                          "embeddings, ln_pre and the blocks below this layer (-1: train all). Default: 0 with "
                                          "--pretrained (CLIP4Clip's runs), -1 for a CLIP trained from scratch")  # fmt: skip

    def resolved_optimizer(self) -> str:
        """``auto``: the update the active method's authors use (``Method.optimizer``), else CLIP4Clip's."""
        if self.optimizer != "auto":
            return self.optimizer
        named = [method.optimizer for method in registry.active_methods(self) if method.optimizer]
        return named[0] if named else DEFAULT_OPTIMIZER

    def starts_from_trained_clip(self) -> bool:
        return bool(getattr(self, "pretrained", None) or getattr(self, "init_from", None))

    def resolved_coef_lr(self) -> float:
        """CLIP4Clip's 1e-3 protects trained weights from the head's rate; random weights need the full rate."""
        if self.coef_lr is not None:
            return self.coef_lr
        return PRETRAINED_COEF_LR if self.starts_from_trained_clip() else 1.0

    def resolved_freeze_layer_num(self) -> int:
        if self.freeze_layer_num is not None:
            return self.freeze_layer_num
        return 0 if self.starts_from_trained_clip() else -1


@dataclass(kw_only=True)
class LossOptions:
    """The loss (train/objective.py) beyond the contrastive term and each method's own terms."""

    # EERCF's two stages for any fine similarity: train the cheap video-level cosine next to it
    coarse_weight: float = option(
        0.0, "weight of a pooled-cosine loss added to a fine similarity's, so EERCF's first stage is trained (e.g. 1.0)"
    )
