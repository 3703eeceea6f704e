"""Training options: one dataclass, filled from the command line, stored in every checkpoint."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields

from train.backbone import ACTIVATIONS
from train.heads import HEADS
from train.interaction import INTERACTIONS
from train.peft import PEFT_MODES


@dataclass
class TrainConfig:
    train_shards: str
    output_dir: str
    val_shards: str | None = None
    model: str | None = None
    pretrained: str | None = None
    activation: str = "auto"
    init_from: str | None = None  # fine-tune from a checkpoint (this project's or a reference's)
    checkpoint_format: str = "auto"
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
    tensorboard: bool = False  # also write TensorBoard event files to --output-dir/tensorboard
    read_retries: int = 5
    decode_on: str = "worker"
    read_timeout: float = 60.0
    dist_timeout: float = 30.0  # minutes a rank waits in a collective (e.g. for a dead node) before failing
    # DRL: token interaction instead of the pooled cosine, and its optional regulariser
    interaction: str = "cosine"
    cdcr_weight: float = 0.0
    cdcr_alpha1: float = 0.11
    cdcr_alpha2: float = 0.0
    # EERCF: train the cheap video-level cosine next to the fine similarity (two-stage retrieval)
    coarse_weight: float = 0.0
    # EMCL: EM subspace reconstruction of the pooled embeddings
    emcl: bool = False
    emcl_bases: int = 32
    emcl_iterations: int = 9
    emcl_beta: float = 3.0
    emcl_momentum: float = 0.9
    emcl_lambda: float = 1.0
    emcl_pool_temperature: float = 3.0
    # parameter-efficient tuning of a frozen CLIP
    peft: str = "none"
    prompt_tokens: int = 8
    lora_rank: int = 8
    lora_alpha: float = 16.0

    def to_json(self) -> dict:
        return asdict(self)


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="torchrun ... -m train", description="Train CLIP4Clip on WebDataset shards.")
    defaults = TrainConfig(train_shards="", output_dir="")
    help_text = {
        "train_shards": "build folder / s3:// prefix with manifest.json, or a brace pattern of .tar URLs",
        "val_shards": "shards of the test split, evaluated with all ranks",
        "model": "open_clip architecture (tiny-ViT is a CPU-sized one); omit it with an OpenAI-layout --pretrained file, "
        "whose weights decide the architecture (a --model that contradicts them is refused)",
        "activation": f"one of {ACTIVATIONS}: auto = QuickGELU for OpenAI-layout files (OpenAI trained with it), the "
        "open_clip config's choice otherwise; gelu only for open_clip state dicts trained with GELU",
        "pretrained": "open_clip tag, or a local file: OpenAI's TorchScript ViT-B-32.pt or a state dict",
        "init_from": "start from a trained model: this project's checkpoint, or CLIP4Clip / DRL / EMCL-Net's pytorch_model.bin.N "
        "(head and similarity must match this run's options)",
        "checkpoint_format": "who wrote --init-from: auto, project, clip4clip, drl or emcl (see python -m eval --help)",
        "sim_header": f"one of {HEADS}",
        "caption_mode": "random: one random caption per video per visit; expand: every caption is a sample",
        "resampled": "draw shards with replacement (never uneven across ranks); --no-resampled splits shards",
        "read_retries": "attempts after a failed shard read (reopened at the byte it stopped), then the shard is skipped and named",
        "read_timeout": "seconds a stalled object-store connection may wait before it counts as failed",
        "tensorboard": "also write loss, lr, clips/s and eval recalls as TensorBoard events under OUTPUT/tensorboard",
        "dist_timeout": "minutes a rank waits in a collective before the job fails (a node that died leaves the others "
        "waiting this long unless the launcher ends the job: srun --kill-on-bad-exit=1, or torchrun --max-restarts)",
        "decode_on": "worker: CPU JPEG decoding in the data workers (default); device: workers ship JPEG bytes and the "
        "training device decodes each batch (nvJPEG on a GPU), for GPUs with few CPU cores",
        "interaction": f"one of {INTERACTIONS}: cosine of pooled vectors, or DRL's weighted (wti) / uniform (ti) token interaction",
        "cdcr_weight": "DRL's channel decorrelation loss weight (DRL uses 0.001; needs --interaction wti/ti)",
        "coarse_weight": "weight of a pooled-cosine loss added to a fine similarity's, so EERCF's first stage is trained (e.g. 1.0)",
        "emcl": "EMCL-Net's similarity: text-conditioned frame pooling, EM over channels and reconstruction (defaults are "
        "EMCL-Net's; use it with --sim-header seqTransf as EMCL-Net does)",
        "emcl_lambda": "EMCL-Net's --lamd: temperature of the E-step softmax over bases",
        "emcl_pool_temperature": "EMCL-Net's --temp: temperature of the text-conditioned softmax over frames",
        "emcl_iterations": "EMCL-Net's --stage_num (EM rounds, at least 1)",
        "peft": f"one of {PEFT_MODES}: freeze CLIP and train visual prompts and/or LoRA (needs --pretrained)",
        "lora_alpha": "LoRA update scale is alpha / rank",
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
    problem = config_problem(config)
    if problem:
        parser.error(problem)
    return config


def config_problem(config: TrainConfig) -> str | None:
    """Combinations that cannot work, said before a model is built."""
    if config.activation not in ACTIVATIONS:
        return f"--activation must be one of {ACTIVATIONS}"
    if config.decode_on not in ("worker", "device"):
        return "--decode-on must be 'worker' or 'device'"
    if config.interaction not in INTERACTIONS:
        return f"--interaction must be one of {INTERACTIONS}"
    if config.peft not in PEFT_MODES:
        return f"--peft must be one of {PEFT_MODES}"
    if config.init_from and config.peft != "none":
        return "--init-from starts every weight from a trained model; it does not combine with --peft"
    if config.init_from and config.pretrained:
        return "--init-from already holds CLIP's weights; drop --pretrained"
    if config.peft != "none" and not config.pretrained:
        return "--peft freezes CLIP: pass the weights to freeze with --pretrained (a frozen random CLIP learns nothing useful)"
    if config.sim_header == "tightTransf" and (config.interaction != "cosine" or config.emcl):
        return "tightTransf scores pairs with its own cross encoder; --interaction wti/ti and --emcl need meanP, seqLSTM or seqTransf"
    if config.emcl and config.emcl_iterations < 1:
        return "--emcl-iterations must be at least 1"
    if config.emcl and config.interaction != "cosine":
        return "--emcl is its own similarity (EMCL-Net's); it does not combine with --interaction wti/ti"
    if config.cdcr_weight and config.interaction == "cosine":
        return "--cdcr-weight regularises token interaction: add --interaction wti (or ti)"
    if config.coarse_weight and not (config.interaction != "cosine" or config.sim_header == "tightTransf" or config.emcl):
        return "--coarse-weight trains a coarse stage under a fine similarity: use it with --interaction wti/ti, --emcl or tightTransf"
    return None
