"""open_clip is imported here without its optional import of Hugging Face ``transformers``.

open_clip imports ``transformers`` at its own import time whenever it is installed
(``open_clip/hf_model.py`` and ``coca_model.py``, each in ``try: ... except ImportError``), only to
offer Hugging Face text towers and CoCa's caption generation. Neither can serve here: CLIP4Clip
encodes text with CLIP's own text transformer (``model.backbone.encode_text``: token embedding,
sliced causal mask, end token), and ``load_clip`` refuses a ``--model`` whose text tower is a
Hugging Face model. Where ``transformers`` is installed (X-Pool's and T-MASS's environments have it)
that import cost every command 0.79 s after its options were parsed (``import model.backbone``
5.12 s -> 4.32 s: ``bench/bench_startup.py``, BENCHMARKS.md).

How: ``model/__init__.py`` puts ``SkipTransformersForOpenClip`` first on ``sys.meta_path``. It answers
``ModuleNotFoundError`` to an import of ``transformers`` made by the top level of an ``open_clip``
module while that module is being imported, which open_clip's ``except ImportError`` takes as
"not installed". Every other import of ``transformers`` is left to the normal finders: the test
suite's ``CLIPModel``, a plug-in method's, or open_clip's own imports inside functions (its HF
tokenizer). A rule on who imports, rather than an import done first: the module that first imports
open_clip in a process (a ``model`` module, a benchmark, a plug-in) then never matters.
"""

from __future__ import annotations

import importlib.abc
import sys
from types import FrameType

SKIPPED_PACKAGE = "transformers"


def _importer(frame: FrameType | None) -> FrameType | None:
    """The frame whose ``import`` statement started this lookup: the first one outside importlib."""
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
        frame = frame.f_back
    return frame


class SkipTransformersForOpenClip(importlib.abc.MetaPathFinder):
    """``transformers`` is "not installed" for open_clip's import-time ``try: import transformers``."""

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001, ARG002 - the finder protocol
        if fullname.partition(".")[0] != SKIPPED_PACKAGE or SKIPPED_PACKAGE in sys.modules:
            return None  # already imported by someone else: open_clip then gets it, as it would anyway
        importer = _importer(sys._getframe(1))
        at_import_time = importer is not None and importer.f_code.co_name == "<module>"
        if at_import_time and importer.f_globals.get("__name__", "").startswith("open_clip."):
            raise ModuleNotFoundError(f"{fullname} is skipped for open_clip's import (model/open_clip_import.py)", name=fullname)
        return None


def install() -> None:
    """Idempotent: one finder, first on ``sys.meta_path``."""
    if not any(isinstance(finder, SkipTransformersForOpenClip) for finder in sys.meta_path):
        sys.meta_path.insert(0, SkipTransformersForOpenClip())
