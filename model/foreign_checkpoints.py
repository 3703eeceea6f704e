"""Checkpoints written by the reference codebases, loaded into this project's model.

CLIP4Clip (``main_task_retrieval.py``), DRL, EMCL-Net (``main.py`` / ``main_retrieval.py``) and
EERCF (``main_eercf.py``) all save ``model.state_dict()`` as ``pytorch_model.bin.N``: weights only, no options. The head
and similarity are therefore read off the keys (``transformerClip`` = seqTransf, ``lstm_visual``
= seqLSTM, ``cross`` = tightTransf, ``text_weight_fc`` = DRL's WTI, ``global_mat_weight`` = EERCF), the CLIP architecture off
the ``clip.*`` weights (OpenAI's layout, QuickGELU), and frames/words default to the references'
12 / 32. A layout that several references share (a meanP or seqTransf model of CLIP4Clip, of
DRL with uniform TI, or of EMCL) cannot be told apart by its keys: ``--checkpoint-format`` says
which. Every key must find its place and every place a key, or the load is refused with the
unmatched keys listed; nothing is silently left at its initial value.

The rows every codebase shares are below; each format's own rows, the keys that mark its files
and the options its keys imply are its method's (``CheckpointFormat``, model/methods/). The table
maps both ways (the tests write reference-layout files from this model's weights with
:func:`to_reference_layout`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from model import hf_clip
from model.config import ModelConfig
from model.methods import registry

# the released formats: each method's own (``Method.checkpoint_format``, model/methods/), in registration order
FORMATS = tuple(registry.checkpoint_formats())
DEFAULT_FORMAT = "clip4clip"  # CLIP4Clip's own code trains a model no method claims

# (this project's key prefix, the reference's key prefix) of what every CLIP4Clip-derived codebase
# names alike: CLIP and the frame aggregation. A format's own rows follow these.
SHARED_ROWS = (
    ("clip.", "clip."),
    ("pool.frame_position.weight", "frame_position_embeddings.weight"),
    ("pool.blocks.", "transformerClip.resblocks."),
    ("pool.lstm.", "lstm_visual."),
)
# CLIP4Clip/DRL/EMCL create a frame position table for seqLSTM too but never read it
UNUSED_FOR_HEAD = {"seqLSTM": ("frame_position_embeddings.weight",)}


def key_table(checkpoint_format: str) -> tuple[tuple[str, str], ...]:
    return (*SHARED_ROWS, *registry.checkpoint_formats()[checkpoint_format].rows)


def not_saved(checkpoint_format: str) -> tuple[str, ...]:
    """Running state a reference keeps outside its state dict (EMCL-Net's bases are a plain tensor
    attribute): a loaded model starts it afresh, exactly as the reference does after loading."""
    return registry.checkpoint_formats()[checkpoint_format].not_saved


class ForeignCheckpointError(RuntimeError):
    """A reference-codebase checkpoint that cannot be mapped onto this model; names the file."""


def is_project_checkpoint(state: object) -> bool:
    return isinstance(state, dict) and {"model", "config", "step"} <= set(state)


def detect_head(keys: set[str]) -> str:
    """CLIP4Clip's loose head the keys hold (a method's own head is among the options its format implies)."""
    if any(k.startswith("transformerClip.") for k in keys):
        return "seqTransf"
    if any(k.startswith("lstm_visual.") for k in keys):
        return "seqLSTM"
    return "meanP"


def detect_format(keys: set[str], path: str) -> str:
    """The reference that wrote these keys, when the keys alone say so."""
    formats = registry.checkpoint_formats()
    marked = [name for name, found in formats.items() if found.has_markers(keys)]
    marked = [name for name in marked if not any(formats[other].extends == name for other in marked)]  # T-MASS's files hold X-Pool's too
    if len(marked) == 1:
        return marked[0]
    if marked:
        raise ForeignCheckpointError(f"{path}: its keys carry the marks of {', '.join(marked)} at once; name one with --checkpoint-format")
    raise ForeignCheckpointError(
        f"{path}: these keys fit CLIP4Clip, DRL (uniform TI) and EMCL-Net alike; say which codebase wrote it "
        f"with --checkpoint-format {{{','.join(FORMATS)}}}"
    )


def _rename(key: str, table: tuple[tuple[str, str], ...], reverse: bool) -> str | None:
    for ours, theirs in table:
        source, target = (theirs, ours) if reverse else (ours, theirs)
        if key == source or (source.endswith(".") and key.startswith(source)):
            return target + key[len(source) :]
    return None


def reference_format(config: ModelConfig) -> str:
    """Which reference codebase trains a model of these options (its parameter names and recipe)."""
    named = [name for method in config.active_methods() if (name := method.reference_format(config))]
    return named[0] if named else DEFAULT_FORMAT


def reference_key(key: str, checkpoint_format: str) -> str | None:
    """This model's parameter name as the reference names it (None: it has no counterpart there)."""
    return _rename(key, key_table(checkpoint_format), reverse=False)


def to_reference_layout(state: dict[str, torch.Tensor], checkpoint_format: str) -> dict[str, torch.Tensor]:
    """This model's state dict renamed to the reference's keys (the inverse of the load)."""
    table, kept_fresh = key_table(checkpoint_format), not_saved(checkpoint_format)
    out = {}
    for key, value in state.items():
        if kept_fresh and key.startswith(kept_fresh):
            continue
        name = _rename(key, table, reverse=False)
        if name is None:
            raise ForeignCheckpointError(f"{key}: no counterpart in {checkpoint_format}'s layout")
        out[name] = value
    return out


def reference_config(keys: set[str], checkpoint_format: str, base: ModelConfig) -> ModelConfig:
    """The options that rebuild the reference's model: the head from the keys, the method's options
    as its format reads them off the keys, the rest (frames, words) from ``base``; its padding rule
    is its code's (model/padding.py) unless ``base`` names one."""
    try:
        implied = registry.checkpoint_formats()[checkpoint_format].options(keys)
    except ValueError as error:
        raise ForeignCheckpointError(str(error)) from error
    options = {"sim_header": detect_head(keys), **implied}
    return replace(base, model=None, pretrained=None, activation="auto", peft="none", padding_rule=base.padding_rule or "reference",
                   **options)  # fmt: skip


def convert_reference_state(
    state: dict[str, torch.Tensor], checkpoint_format: str, expected_keys: set[str], head: str, path: str
) -> dict[str, torch.Tensor]:
    """Reference keys -> this model's, refusing anything unmatched in either direction."""
    table = key_table(checkpoint_format)
    mapped, unmatched = {}, []
    for key, value in state.items():
        if key in UNUSED_FOR_HEAD.get(head, ()):
            continue
        name = _rename(key, table, reverse=True)
        if name is None or name not in expected_keys:
            unmatched.append(key)
            continue
        mapped[name] = value
    missing = sorted(expected_keys - set(mapped))
    if unmatched or missing:
        marked = [name for name, found in registry.checkpoint_formats().items() if name != checkpoint_format and found.has_markers(set(state))]
        found = f" (its keys carry the marks of {', '.join(marked)}: --checkpoint-format {marked[0]})" if marked else ""
        raise ForeignCheckpointError(
            f"{path}: does not fit a {checkpoint_format} {head} model{found}; keys in the file with no place here: "
            f"{sorted(unmatched)[:12]}{' ...' if len(unmatched) > 12 else ''}; places here with no key in the file: "
            f"{missing[:12]}{' ...' if len(missing) > 12 else ''}"
        )
    return mapped


def _torch_load(path: str) -> object:
    from model.checkpoint import torch_load

    try:
        return torch_load(path)  # weights only: never runs pickled code
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - unpickling and zip errors have many types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ForeignCheckpointError(f"{path}: not a readable checkpoint ({first_line})") from error


def as_state_dict(loaded: object, path: str) -> dict[str, torch.Tensor]:
    """A reference checkpoint's tensors (``module.`` prefixes of DDP-wrapped saves removed)."""
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ForeignCheckpointError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def load_any_checkpoint(path: str, checkpoint_format: str = "auto", max_frames: int = 12, max_words: int = 32) -> dict:
    """A checkpoint of this project as it is, or a reference checkpoint turned into one
    (``model``, ``config``, ``step`` 0, ``backbone``) that :func:`model.restore.restore_model` rebuilds."""
    from open_clip.model import build_model_from_openai_state_dict

    from model.backbone import is_openai_layout
    from model.checkpoint import load_checkpoint
    from model.factory import assemble_model

    if checkpoint_format not in ("auto", "project", *FORMATS):
        raise ForeignCheckpointError(f"--checkpoint-format must be auto, project or one of {FORMATS}")
    if checkpoint_format == "project":
        return load_checkpoint(path)
    loaded = _torch_load(path)
    if is_project_checkpoint(loaded):
        if checkpoint_format != "auto":
            raise ForeignCheckpointError(f"{path}: a checkpoint of this project, not {checkpoint_format}'s; drop --checkpoint-format")
        return loaded
    state = as_state_dict(loaded, path)
    clip_state = {k.removeprefix("clip."): v for k, v in state.items() if k.startswith("clip.")}
    if hf_clip.is_hf_layout(clip_state):  # X-Pool's and T-MASS's CLIP is transformers' CLIPModel
        try:
            clip_state = hf_clip.hf_to_openai(clip_state, path)
        except hf_clip.HFLayoutError as error:
            raise ForeignCheckpointError(str(error)) from error
        state = {**{k: v for k, v in state.items() if not k.startswith("clip.")}, **{"clip." + k: v for k, v in clip_state.items()}}
    if not is_openai_layout(clip_state):
        raise ForeignCheckpointError(
            f"{path}: not a checkpoint of this project (model, config, step), nor a released checkpoint of {', '.join(FORMATS)} "
            "(no CLIP weights in OpenAI's or Hugging Face's layout under clip.*)"
        )
    keys = set(state)
    chosen = detect_format(keys, path) if checkpoint_format == "auto" else checkpoint_format
    config = reference_config(keys, chosen, ModelConfig(max_frames=max_frames, max_words=max_words))
    if "visual.conv2.weight" in clip_state:
        raise ForeignCheckpointError(f"{path}: trained with CLIP4Clip's --linear_patch 3d, which this model does not build")
    clip = build_model_from_openai_state_dict(clip_state, quick_gelu=True, cast_dtype=None).float()
    model = assemble_model(clip, config)
    kept_fresh = not_saved(chosen)
    expected = {k for k in model.state_dict() if not k.startswith(kept_fresh or ("\0",))}
    mapped = convert_reference_state(state, chosen, expected, config.sim_header, path)
    mapped.update({k: v for k, v in model.state_dict().items() if k not in expected})
    return {"model": mapped, "config": config.to_json(), "step": 0, "backbone": {"activation": "QuickGELU"},
            "source": {"format": chosen, "path": path}}  # fmt: skip
