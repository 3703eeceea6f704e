"""Published runs as option sets: ``python -m train --recipe NAME`` reads ``recipes/NAME.toml``.

A recipe names the source file and lines it transcribes, the numbers its paper or README reports,
what the user must still pass (``requires``: e.g. the CLIP weights), and ``[options]``: TrainConfig
fields under their Python names. Flags on the command line override it. Keys are checked against
TrainConfig when the file is read, so a typo in a recipe is an error naming the file and the key,
never a silently ignored option.
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
TOP_LEVEL_KEYS = {"title", "source", "published", "requires", "shards", "notes", "precision_source", "options"}


class RecipeError(ValueError):
    """A recipe that cannot be used; names the file."""


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    title: str
    source: str
    published: str
    requires: tuple[str, ...]
    shards: str
    notes: str
    options: dict = field(default_factory=dict)
    precision_source: str = ""  # the source line that says how the published run computed (its options hold the precision)


def recipe_names() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.toml"))


def load_recipe(name_or_path: str, config_type: type) -> Recipe:
    """``name_or_path``: a name under recipes/ or a .toml file; ``config_type``: TrainConfig (its fields are the keys)."""
    path = Path(name_or_path) if name_or_path.endswith(".toml") else RECIPES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe; known: {', '.join(recipe_names())}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{path}: not valid TOML ({error})") from error
    unknown = set(data) - TOP_LEVEL_KEYS
    if unknown:
        raise RecipeError(f"{path}: unknown entries {sorted(unknown)} (expected {sorted(TOP_LEVEL_KEYS)})")
    known = {f.name: f for f in fields(config_type)}
    options = data.get("options", {})
    for key, value in options.items():
        if key not in known:
            raise RecipeError(f"{path}: [options] {key} is not a training option (python -m train --help lists them)")
        default = known[key].default
        if default is not MISSING and default is not None and not isinstance(value, type(default)) and not (
            isinstance(default, float) and isinstance(value, int)
        ):
            raise RecipeError(f"{path}: [options] {key} = {value!r} should be a {type(default).__name__}")
    for key in data.get("requires", []):
        if key not in known:
            raise RecipeError(f"{path}: requires {key}, which is not a training option")
    return Recipe(name=path.stem, path=path, title=data.get("title", ""), source=data.get("source", ""), published=data.get("published", ""),
                  requires=tuple(data.get("requires", [])), shards=data.get("shards", ""), notes=data.get("notes", ""),
                  precision_source=data.get("precision_source", ""),
                  options={k: float(v) if isinstance(known[k].default, float) and isinstance(v, int) else v for k, v in options.items()})  # fmt: skip


# clips per GPU per micro-batch that the references' own runs held on their GPUs (CLIP4Clip: 128 on 4, DRL: 128 on 4)
CLIPS_PER_GPU = 32


def accumulation_plan(global_batch: int, gpus: int, clips_per_gpu: int = CLIPS_PER_GPU) -> tuple[int, int]:
    """(--batch-size, --accum-freq) that reach ``global_batch`` per optimiser step on ``gpus`` GPUs with at most
    ``clips_per_gpu`` clips on a GPU at once: the fewest micro-batches that divide the batch evenly over the GPUs."""
    for accum in range(1, global_batch + 1):
        if global_batch % accum == 0 and (global_batch // accum) % gpus == 0 and global_batch // accum // gpus <= clips_per_gpu:
            return global_batch // accum, accum
    raise ValueError(f"a global batch of {global_batch} cannot be spread over {gpus} GPUs")


def accumulation_lines(global_batch: int) -> list[str]:
    """How to reach a recipe's global batch on 1, 2, 4 and 8 GPUs (printed with the recipe, README shows them)."""
    lines = []
    for gpus in (1, 2, 4, 8):
        try:
            batch, accum = accumulation_plan(global_batch, gpus)
        except ValueError:
            continue
        launcher = "python -m train" if gpus == 1 else f"torchrun --nproc-per-node {gpus} -m train"
        lines.append(f"{gpus} GPU{'s' if gpus > 1 else ''}: {launcher} ... --batch-size {batch}" + (f" --accum-freq {accum}" if accum > 1 else "")
                     + f"  ({batch // gpus} clips per GPU at once)")  # fmt: skip
    return lines


def option_origins(config, recipe_options: dict) -> list[list]:  # noqa: ANN001 - a TrainConfig
    """[option, value, origin] for every option. ``flag``: the command line gave it (whatever its value, the
    default's included); ``recipe``: the recipe set it; ``default``: neither did; ``resolved``: neither did and
    the run resolved an unset default (``--padding-rule``'s None became the method's rule). What the command line
    gave is read from the parse itself (``TrainConfig.command_line_options``, set by ``parse_config``); a config
    built in code has no such record, and there a value unlike the built-in default counts as a flag.
    The run's log prints the non-default ones, the run log records all of them, the results card shows them."""
    given = getattr(config, "command_line_options", None)
    rows = []
    for f in fields(config):
        value = getattr(config, f.name)
        at_default = f.default is not MISSING and value == f.default
        if given is not None:
            origin = ("flag" if f.name in given else "recipe" if f.name in recipe_options
                      else "default" if at_default or f.default is MISSING else "resolved")  # fmt: skip
        elif f.name in recipe_options:
            origin = "recipe" if recipe_options[f.name] == value else "flag"
        else:
            origin = "default" if at_default else "flag"
        rows.append([f.name, value, origin])
    return rows


def effective_options(config, recipe_options: dict) -> list[str]:  # noqa: ANN001 - a TrainConfig
    """Each option the command line or the recipe gave, or the run resolved, as ``--flag value (where it came from)``."""
    said = {"recipe": "recipe", "flag": "command line", "resolved": "default, resolved"}
    return [f"--{name.replace('_', '-')} {value} ({said[origin]})"
            for name, value, origin in option_origins(config, recipe_options) if origin != "default"]  # fmt: skip
