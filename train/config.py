"""Training options: the model's (model/config.py: the core and each method's group), the data
stream's, the update's and the loss's (train/options.py), plus the run's, filled from the command
line and stored in every checkpoint. Each field carries its help and choices; ``--help`` shows one
argument group per options class, each method's titled with its paper and reference code.
``config_problem`` is the one validation, run by ``parse_config`` before anything heavy starts.

Nothing here imports torch: ``--help`` and an argument error answer at once."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields

from model.config import CoreOptions, ModelConfig
from model.methods import registry
from model.options import flag, option
from runtime.cli import HelpFormatter
from shards.read_policy import ReadPolicy
from train.options import PRECISIONS, DataOptions, LossOptions, OptimOptions
from train.recipes import Recipe, RecipeError, load_recipe

KEEP_BEST_METRICS = (None, *(f"{d}/{m}" for d in ("t2v", "v2t") for m in ("R1", "R5", "R10", "MdR", "MnR")))


def required(help: str) -> object:  # noqa: A002 - mirrors argparse
    return field(metadata={"help": help, "choices": None})


@dataclass(kw_only=True)
class TrainConfig(ModelConfig, DataOptions, OptimOptions, LossOptions):
    recipe: str | None = option(
        None, "a published run's options: a name under recipes/ (docs/training.md lists them) or a .toml file; flags given here override it"
    )
    train_shards: str = required(
        "build folder / s3:// prefix with manifest.json, or a brace pattern of .tar URLs; a mixture: SOURCE::SOURCE::... (train/mixture.py)"
    )
    train_weights: str | None = option(None, "each mixture source's share of the samples, W::W::... (default: equal)")
    output_dir: str = required("run folder or fsspec URL (s3://...): checkpoints, metrics.jsonl, curves")
    val_shards: str | None = option(None, "shards of the test split, evaluated with all ranks")
    init_from: str | None = option(None, "start from a trained model: this project's checkpoint, or CLIP4Clip / DRL / EMCL-Net / EERCF's "
                                   "pytorch_model.bin.N (head and similarity must match this run's options)")  # fmt: skip
    checkpoint_format: str = option("auto", "who wrote --init-from (see python -m eval --help)",
                                    ("auto", "project", *registry.checkpoint_formats()))  # fmt: skip
    batch_size: int = option(
        128, "global batch, over all ranks (with --accum-freq K: of each micro-batch; an optimiser step takes K of them)"
    )
    accum_freq: int = option(1, "micro-batches per optimiser step (open_clip's --accum-freq): the step's global batch is accum_freq x "
                             "batch_size, its gradient exactly the whole batch's, negatives included (train/accumulation.py); "
                             "reaches a published global batch on fewer GPUs")  # fmt: skip
    epochs: int = option(5)
    steps_per_epoch: int | None = option(None, "default: the manifest's samples (or captions with --caption-mode expand) // batch size")
    seed: int = option(42)
    precision: str = option("auto", "auto: bf16 autocast on GPU, fp32 on CPU; fp16: CLIP's weights in fp16 as CLIP4Clip / DRL / EMCL-Net "
                            "/ EERCF train them (convert_weights, fp16 BertAdam moments, heads fp32); amp-fp16: fp16 autocast with "
                            "a GradScaler, DGL's --precision amp (train/precision.py)", PRECISIONS)  # fmt: skip
    grad_checkpointing: bool = option(False, "recompute CLIP's activations in the backward pass (less memory, more time)")
    eval_every_steps: int = option(0, "evaluate every this many steps (0: by epochs, --eval-every-epochs)")
    eval_every_epochs: int = option(1, "evaluate at the end of every this many epochs, and at the end of the run (when --val-shards "
                                    "is given and --eval-every-steps is 0)")  # fmt: skip
    keep_best: str | None = option(None, "keep the checkpoint with the best validation METRIC beside the latest "
                                   "(checkpoints/best.pt and best.json: value, step, epoch): t2v/R1, t2v/R5, t2v/R10, t2v/MdR, t2v/MnR or "
                                   "v2t/...; recalls are maximised, ranks minimised; python -m eval --which best reads it", KEEP_BEST_METRICS)  # fmt: skip
    eval_batch_size: int = option(32)
    checkpoint_every_steps: int = option(500)
    log_every_steps: int = option(10)
    sync_every_steps: int = option(1, "steps between the host's reads of the device: the NaN check and the agreed SIGTERM flag (more: no "
                                   "per-step host sync; a NaN still stops the run before a checkpoint or an evaluation uses it, and "
                                   "SIGTERM saves within this many steps)")  # fmt: skip
    compile: bool = option(False, "torch.compile the video and text encoders in place (checkpoint keys unchanged); the first steps compile")
    tensorboard: bool = option(False, "also write loss, lr, clips/s and eval recalls as TensorBoard events under OUTPUT/tensorboard")
    read_retries: int = option(
        ReadPolicy.retries, "attempts after a failed shard read (reopened at the byte it stopped), then the shard is skipped and named"
    )
    read_timeout: float = option(ReadPolicy.timeout_s, "seconds a stalled object-store connection may wait before it counts as failed")
    dist_timeout: float = option(30.0, "minutes a rank waits in a collective before the job fails (a node that died leaves the others "
                                 "waiting this long unless the launcher ends the job: srun --kill-on-bad-exit=1, or torchrun --max-restarts)")  # fmt: skip


def step_batch_size(config: TrainConfig) -> int:
    """Clips in one optimiser step, over all ranks: ``--accum-freq`` micro-batches of ``--batch-size``."""
    return config.batch_size * config.accum_freq


def _argument_type(annotation: str) -> type:
    return {"int": int, "float": float, "int | None": int, "float | None": float}.get(annotation, str)


def option_groups(config_class: type) -> list[tuple[str, list]]:
    """The fields of ``config_class`` by the options class that declares them, in the order ``--help``
    shows them: the run's, CLIP4Clip's core, the data's, the update's, the loss's, then one group
    per method, titled with its paper and its authors' code."""
    owners = [("run: shards, output, batch, epochs, checkpoints, evaluation", TrainConfig), (CoreOptions.__doc__, CoreOptions)]
    owners += [(owner.__doc__.splitlines()[0], owner) for owner in (DataOptions, OptimOptions, LossOptions)]
    owners += [(f"{m.title} [{m.reference}]", m.options) for m in registry.methods() if m.options and issubclass(config_class, m.options)]
    by_name, groups, placed = {f.name: f for f in fields(config_class)}, [], set()
    for title, owner in owners:
        declared = [by_name[name] for name in vars(owner).get("__annotations__", {}) if name in by_name and name not in placed]
        placed.update(f.name for f in declared)
        groups.append((title, declared))
    left = [f for f in fields(config_class) if f.name not in placed]
    return groups + ([("other options", left)] if left else [])


def build_parser(config_class: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter, prog="torchrun ... -m train", description="Train CLIP4Clip on WebDataset shards."
    )
    for title, group_fields in option_groups(config_class):
        group = parser.add_argument_group(title)
        for f in group_fields:
            help_text, choices = f.metadata.get("help"), f.metadata.get("choices")
            help_text = (
                help_text.replace("%", "%%") if help_text else help_text
            )  # argparse formats help with %: a literal % must be doubled
            if f.type in ("bool", bool):
                group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
                continue
            is_required = f.default is MISSING
            shown = (
                None if choices is None else [choice for choice in choices if choice is not None]
            )  # None is "unset", not a choice to list
            group.add_argument(flag(f.name), type=_argument_type(str(f.type)), default=None if is_required else f.default,
                               required=is_required, choices=shown or None, help=help_text)  # fmt: skip
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Options from the built-in defaults, then ``--recipe``'s file, then the command line (each overrides the one before).
    The modules of ``--methods-from`` are imported first, so their methods' flags are parsed too."""
    recipe_name, methods_from = _early_arguments(argv)
    try:
        registry.import_method_modules(methods_from)
    except registry.MethodError as error:
        build_parser(TrainConfig).error(str(error))
    config_class = registry.with_registered_options(TrainConfig)
    parser = build_parser(config_class)
    recipe = None
    if recipe_name:
        try:
            recipe = load_recipe(recipe_name, config_class)
        except RecipeError as error:
            parser.error(str(error))
        parser.set_defaults(**recipe.options)
    args = parser.parse_args(argv)
    config = config_class(**{f.name: getattr(args, f.name) for f in fields(config_class)})
    config.command_line_options = given_on_command_line(parser, argv)  # not a field: where each value came from, for the records
    if recipe is not None:
        missing = [name for name in recipe.requires if not getattr(config, name)]
        if missing:
            parser.error(
                f"recipe {recipe.name} needs {', '.join('--' + m.replace('_', '-') for m in missing)} ({recipe.notes or recipe.title})"
            )
    if config.model in ("", "none", "None"):
        config.model = None
    problem = config_problem(config)
    if problem:
        parser.error(problem)
    return config


def given_on_command_line(parser: argparse.ArgumentParser, argv: list[str] | None) -> frozenset[str]:
    """The options the command line itself gave, whatever their values (``--max-frames 12`` too): the same
    arguments parsed again with every default, the recipe's included, taken away."""
    saved_defaults, saved_parser_defaults = [action.default for action in parser._actions], dict(parser._defaults)
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        parser._defaults.clear()
        given = vars(parser.parse_args(argv))
    finally:
        for action, default in zip(parser._actions, saved_defaults, strict=True):
            action.default = default
        parser._defaults.update(saved_parser_defaults)
    return frozenset(given) - {"help"}


def _early_arguments(argv: list[str] | None) -> tuple[str | None, str | None]:
    """``--recipe`` and ``--methods-from``, read before the full parse: the recipe's options become the
    parser's defaults, and the methods' modules add their flags."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    pre.add_argument("--methods-from")
    known, _ = pre.parse_known_args(argv)
    return known.recipe, known.methods_from


def recipe_of(config: TrainConfig) -> Recipe | None:
    return load_recipe(config.recipe, type(config)) if config.recipe else None


def config_problem(config: TrainConfig) -> str | None:
    """Combinations that cannot work, said before a model is built: the model's own rules
    (model/config.py), then the run's."""
    problem = config.problem()  # its choices check covers every field of type(config), the training options' too
    if problem:
        return problem
    if config.init_from and config.peft != "none":
        return "--init-from starts every weight from a trained model; it does not combine with --peft"
    if config.init_from and config.pretrained:
        return "--init-from already holds CLIP's weights; drop --pretrained"
    if config.precision == "fp16" and config.peft != "none":
        return (f"--precision fp16 is the convert_weights regime of CLIP4Clip, DRL, EMCL-Net and EERCF; --peft {config.peft} runs CLIP "
                "block by block in fp32: use --precision amp-fp16 (DGL's) or fp32 (TempMe's)")  # fmt: skip
    if config.keep_best and not config.val_shards:
        return "--keep-best chooses by validation: pass --val-shards"
    if config.eval_every_epochs < 1:
        return f"--eval-every-epochs must be at least 1, not {config.eval_every_epochs}"
    if config.accum_freq < 1:
        return f"--accum-freq must be at least 1, not {config.accum_freq}"
    if config.sync_every_steps < 1:
        return f"--sync-every-steps must be at least 1, not {config.sync_every_steps}"
    if config.coarse_weight and not any(m.trains_fine_similarity(config) for m in config.active_methods()):
        return "--coarse-weight trains a coarse stage under a fine similarity: use it with --interaction wti/ti, --emcl or tightTransf"
    for method in config.active_methods():
        problem = method.run_problem(config)
        if problem:
            return problem
    return None
