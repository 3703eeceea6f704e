"""How an option is declared, and the choices of the model's core options.

Every option is a dataclass field that carries its command-line help and choices (``option``);
``python -m train --help`` and the argument parser are built from those fields, one argument
group per options class. This module, the options classes and the method modules that declare
them import no torch, so that ``--help`` and an argument error answer at once (a torch import
costs seconds); the code that reads the options imports torch itself.
"""

from __future__ import annotations

from dataclasses import field, fields
from typing import Any

# CLIP4Clip's loose video heads (model/heads.py builds them); methods may add heads (tightTransf)
LOOSE_HEADS = ("meanP", "seqLSTM", "seqTransf")
# open_clip's activations for CLIP's MLPs (model/backbone.py reads the choice)
ACTIVATIONS = ("auto", "quickgelu", "gelu")
# how padded frames and tokens count (model/padding.py says what each rule does)
PADDING_RULES = ("masked", "reference")
DEFAULT_PADDING_RULE = "masked"  # new runs; imports of the references' checkpoints and published recipes choose reference
# which checkpoint of a run folder eval, search.index and the card read (model/trained_model.py resolves it)
CHECKPOINT_CHOICES = ("latest", "best")


def option(default: Any, help: str | None = None, choices: tuple | None = None) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field carrying its command-line help and choices."""
    return field(default=default, metadata={"help": help, "choices": choices})


def choices_problem(config: object, owner: type) -> str | None:
    """The first field of ``owner`` (a dataclass) whose value in ``config`` is not one of its choices."""
    for f in fields(owner):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            return f"--{f.name.replace('_', '-')} must be one of {choices}, not {getattr(config, f.name)!r}"
    return None


def flag(name: str) -> str:
    """A field's command-line spelling: ``emcl_bases`` -> ``--emcl-bases``."""
    return "--" + name.replace("_", "-")
