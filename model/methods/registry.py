"""The registry of methods: what a method built on CLIP4Clip's skeleton declares, in one place.

A method (DRL, EMCL-Net, EERCF, TempMe, ...) is one module that subclasses :class:`Method` and
calls :func:`register`. The model's config, the model factory, the objective, the trainer's
checks and the importer of released checkpoints ask the registry; none of them names a method.

What a method owns:

- ``options``: a dataclass of its flags (``model.options.option`` fields: help and choices),
  shown as one argument group of ``python -m train --help``, titled with ``title`` and
  ``reference``. The built-in methods' options are fields of ``ModelConfig`` itself; a method
  registered from outside this package adds its options to the config classes of a run that
  names its module (``--methods-from``, :func:`with_registered_options`).
- ``is_active(config)``: whether a run uses it (its own options say so);
- ``problem`` / ``run_problem``: the combinations of options that cannot work, said before
  anything heavy is built;
- ``similarity``: the ``Similarity`` it scores with, if it replaces the pooled cosine;
  ``prepare_clip`` / ``adapter``: what it adds to a frozen CLIP or how it runs it (PEFT);
- ``loss_terms``: what it adds to the contrastive loss (DRL's CDCR);
- ``checkpoint_format``: the key table that imports its authors' released checkpoints;
- ``heads`` / ``peft_modes``: values it adds to ``--sim-header`` / ``--peft``; ``optimizer``: the
  update its authors' script uses (``--optimizer auto``).

A method module imports no torch at import time (``--help`` must start at once): the modules
with its math are imported by the methods that build something.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import nn

    from model.features import TextFeatures, VideoFeatures
    from model.similarity import Similarity, TrainingScores


class MethodError(ValueError):
    """A method module that cannot be imported or registered; names the module and the cause."""


@dataclass(frozen=True)
class CheckpointFormat:
    """How a released checkpoint of the method's authors maps onto this project's model.

    ``rows``: (this project's key prefix, the authors' key prefix), beyond the rows every
    CLIP4Clip-derived codebase shares (CLIP and the video head, model/foreign_checkpoints.py).
    ``markers``: key prefixes only this format's files have (empty: its files cannot be told from
    others by their keys, ``--checkpoint-format`` must name it). ``not_saved``: running state the
    authors keep outside their state dict, started afresh on load. ``options``: the option values
    its files imply, read off their keys (raises ``ValueError`` for variants not built here). ``extends``:
    the format this one builds on, whose markers its files carry too."""

    name: str
    rows: tuple[tuple[str, str], ...] = ()
    markers: tuple[str, ...] = ()
    extends: str | None = None  # a format whose files also carry this one's markers (T-MASS's hold X-Pool's): this one wins
    not_saved: tuple[str, ...] = ()
    implied_options: Any = None  # Callable[[set[str]], dict] | None

    def options(self, keys: set[str]) -> dict:
        return self.implied_options(keys) if self.implied_options else {}

    def has_markers(self, keys: set[str]) -> bool:
        return any(key == marker or key.startswith(marker) for key in keys for marker in self.markers)


class Method:
    """One method on CLIP4Clip's skeleton. Subclasses fill in the class attributes and override
    the hooks they need; every hook has a do-nothing default."""

    name: ClassVar[str]
    title: ClassVar[str]  # the paper, e.g. "DRL: Disentangled Representation Learning (Wang et al., 2022)"
    reference: ClassVar[str]  # the authors' code: repository and files
    options: ClassVar[type | None] = None
    heads: ClassVar[tuple[str, ...]] = ()
    peft_modes: ClassVar[tuple[str, ...]] = ()
    optimizer: ClassVar[str | None] = None
    architecture_options: ClassVar[tuple[str, ...]] = ()  # options that change the module tree (an --init-from start must agree)
    checkpoint_format: ClassVar[CheckpointFormat | None] = None

    def is_active(self, config: Any) -> bool:
        raise NotImplementedError

    def problem(self, config: Any) -> str | None:
        """Model options that cannot work together, asked of an active method (``ModelConfig.problem``)."""
        return None

    def run_problem(self, config: Any) -> str | None:
        """Training options that cannot work with this method, asked of an active method (``train.config``)."""
        return None

    def trains_fine_similarity(self, config: Any) -> bool:
        """A similarity finer than the pooled cosine, under which ``--coarse-weight`` trains a first stage."""
        return False

    def reference_format(self, config: Any) -> str | None:
        """The released codebase that trains a model of these options (its parameter names decide
        BertAdam's decay groups), or None."""
        return None

    def similarity(self, config: Any, clip: nn.Module, width: int) -> Similarity | None:
        """The similarity this method scores with, or None (the pooled cosine, or another method's)."""
        return None

    def prepare_clip(self, clip: nn.Module, config: Any) -> None:
        """Add trainable modules inside a frozen CLIP (PEFT); called after the head is built."""

    def adapter(self, clip: nn.Module, config: Any) -> nn.Module | None:
        """A module that runs the frozen CLIP its own way (TempMe, DGL, the dual-attention seed).

        It lives next to CLIP in the model (``CLIP4Clip.adapter``), never inside it: its parameters
        are new modules (trained at ``--lr``, saved in PEFT checkpoints) and CLIP's frozen weights
        stay where the base file put them. It offers ``encode_video(clip, pixels, mask)`` ->
        (per-frame features, global feature or None), optionally ``encode_text(clip, tokens)``, and
        ``alpha``: the weight of the global feature in the video vector (1: the global feature
        alone, as DGL; 0.4 for the seed)."""
        return None

    def loss_terms(self, model: nn.Module, text: TextFeatures, video: VideoFeatures, scores: TrainingScores,
                   config: Any) -> list[tuple[str, float, torch.Tensor]]:  # fmt: skip
        """(name, weight, value) terms added to the loss; inputs are the gathered global batch."""
        return []


_METHODS: dict[str, Method] = {}
_BUILT_IN: set[str] = set()
_loading_built_ins = True


def register(method: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry (a name registered twice is refused)."""
    name = method.name
    if name in _METHODS and type(_METHODS[name]) is not method:
        raise MethodError(f"two methods named {name!r}: {type(_METHODS[name]).__module__} and {method.__module__}")
    owned = {n for m in _METHODS.values() if m.name != name and m.options for n in _field_names(m.options)}
    clash = sorted(owned & _field_names(method.options)) if method.options else []
    if clash:
        raise MethodError(f"{method.__module__}: options {clash} are already declared by another method")
    _METHODS[name] = method()
    if _loading_built_ins:
        _BUILT_IN.add(name)
    return method


def built_ins_loaded() -> None:
    """Called once by ``model.methods`` after its own modules registered: later ones are plug-ins."""
    global _loading_built_ins
    _loading_built_ins = False


def _field_names(options: type) -> set[str]:
    return {f.name for f in fields(options)}


def methods() -> list[Method]:
    """Every registered method, in registration order (built-ins first)."""
    return list(_METHODS.values())


def method(name: str) -> Method:
    return _METHODS[name]


def built_in_options() -> list[type]:
    return [m.options for m in _METHODS.values() if m.name in _BUILT_IN and m.options]


def plugin_options() -> list[type]:
    return [m.options for m in _METHODS.values() if m.name not in _BUILT_IN and m.options]


def active_methods(config: Any) -> list[Method]:
    """The methods a config uses. A plug-in whose options the config does not carry is not active."""
    return [m for m in _METHODS.values() if (m.options is None or isinstance(config, m.options)) and m.is_active(config)]


def added_choices(attribute: str) -> tuple[str, ...]:
    """Values the registered methods add to a core option (``heads`` for --sim-header, ``peft_modes`` for --peft)."""
    return tuple(value for m in _METHODS.values() for value in getattr(m, attribute))


def checkpoint_formats() -> dict[str, CheckpointFormat]:
    return {m.checkpoint_format.name: m.checkpoint_format for m in _METHODS.values() if m.checkpoint_format}


def parse_module_list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def import_method_modules(text: str | None) -> None:
    """Import the modules named by ``--methods-from`` (comma-separated), each registering its methods."""
    for name in parse_module_list(text):
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise MethodError(f"--methods-from {name}: cannot import it ({error}); is it on PYTHONPATH or installed?") from error


_COMPOSED: dict[tuple[type, tuple[type, ...]], type] = {}


def with_registered_options(config_class: type) -> type:
    """``config_class`` extended by the options of every plug-in method registered so far (the class
    itself when there are none): a config of a run with plug-ins carries their flags as its fields,
    is stored flat in its checkpoints like every other option, and is still a ``config_class``."""
    extra = tuple(options for options in plugin_options() if not issubclass(config_class, options))
    if not extra:
        return config_class
    key = (config_class, extra)
    if key not in _COMPOSED:
        composed = type(config_class.__name__, (config_class, *extra), {"__module__": config_class.__module__})
        _COMPOSED[key] = dataclass(kw_only=True)(composed)
    return _COMPOSED[key]
