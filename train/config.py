"""Training options: one dataclass, filled from the command line, stored in every checkpoint."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields

from train.heads import HEADS


@dataclass
class TrainConfig:
    train_shards: str
    output_dir: str
    val_shards: str | None = None
    model: str | None = "ViT-B-32"
    pretrained: str | None = None
    force_quick_gelu: bool = False
    sim_header: str = "meanP"
    max_frames: int = 12
    max_words: int = 32
    batch_size: int = 128  # global, over all ranks
    epochs: int = 5
    steps_per_epoch: int | None = None  # default: manifest items // batch_size
    lr: float = 1e-4
    coef_lr: float = 1e-3
    weight_decay: float = 0.2
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    caption_mode: str = "random"
    shuffle_buffer: int = 500
    workers: int = 4
    resampled: bool = True
    seed: int = 42
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    grad_checkpointing: bool = False
    eval_every_steps: int = 0  # 0: at the end of every epoch (when --val-shards is given)
    eval_batch_size: int = 32
    checkpoint_every_steps: int = 500
    log_every_steps: int = 10

    def to_json(self) -> dict:
        return asdict(self)


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="torchrun ... -m train", description="Train CLIP4Clip on WebDataset shards.")
    defaults = TrainConfig(train_shards="", output_dir="")
    help_text = {
        "train_shards": "build folder / s3:// prefix with manifest.json, or a brace pattern of .tar URLs",
        "val_shards": "shards of the test split, evaluated with all ranks",
        "model": "open_clip architecture (tiny-ViT is a CPU-sized one); omit with an OpenAI-layout --pretrained file",
        "pretrained": "open_clip tag, or a local file: OpenAI's TorchScript ViT-B-32.pt or a state dict",
        "sim_header": f"one of {HEADS}",
        "caption_mode": "random: one random caption per video per visit; expand: every caption is a sample",
        "resampled": "draw shards with replacement (never uneven across ranks); --no-resampled splits shards",
    }
    for field in fields(TrainConfig):
        name = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        if field.type in ("bool", bool):
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=default, help=help_text.get(field.name))
            continue
        kind = {"int": int, "float": float, "int | None": int}.get(str(field.type), str)
        required = field.name in ("train_shards", "output_dir")
        parser.add_argument(name, type=kind, default=None if required else default, required=required, help=help_text.get(field.name))
    args = parser.parse_args(argv)
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    if config.sim_header not in HEADS:
        parser.error(f"--sim-header must be one of {HEADS}")
    if config.model in ("", "none", "None"):
        config.model = None
    return config
