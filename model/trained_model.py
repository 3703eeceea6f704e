"""Find, rebuild and run a trained model for inference: evaluation, indexing and search (one path for all three).

A checkpoint is a file, or a run / checkpoints folder (its ``latest``), on local disk or any
fsspec URL; this project's and the reference codebases' files alike (model/foreign_checkpoints.py).
The fingerprint identifies the weights themselves, not the file name: an index refuses to
mix vectors of two models, and a search refuses to read an index with another model.
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from model.clip4clip import CLIP4Clip
from model.config import ModelConfig
from model.foreign_checkpoints import load_any_checkpoint
from model.restore import restore_model
from runtime.run_folder import best_checkpoint, best_record, checkpoints_of, latest_checkpoint
from shards.storage import Store


@dataclass
class TrainedModel:
    model: CLIP4Clip
    config: ModelConfig
    checkpoint: str  # the file actually read (a folder's ``latest`` resolved)
    step: int
    checkpoint_format: str = "auto"  # as asked for: the reference codebases' files are told apart by it
    max_frames: int | None = None  # the overrides asked for, to load the same model again
    max_words: int | None = None


def inference_autocast(device: torch.device):
    """bf16 autocast on GPUs (features leave as float32 or float16 either way), nothing on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def resolve_checkpoint(path: str, which: str = "latest") -> str:
    """A checkpoint file as it is, or a run/checkpoints folder's ``latest`` (or, ``which="best"``, the
    ``--keep-best`` checkpoint); local or any fsspec URL."""
    store = Store(path)
    if store.fs.isdir(store.root):
        for folder in (path, checkpoints_of(path)):
            found = latest_checkpoint(folder) if which == "latest" else (best_checkpoint(folder) or (None,))[0]
            if found:
                return found
        if which == "best":
            raise FileNotFoundError(f"{path}: no checkpoints/best.json inside (the run was not trained with --keep-best)")
        raise FileNotFoundError(f"{path}: no checkpoints/latest inside")
    if not store.fs.isfile(store.root):
        raise FileNotFoundError(f"{path}: checkpoint not found")
    return path


def describe_choice(path: str, which: str) -> str:
    """What a run folder resolved to, for the log: the file, and for ``best`` its metric, value, step and epoch."""
    chosen = resolve_checkpoint(path, which)
    if which != "best":
        return f"{chosen} ({'the latest checkpoint of the run' if chosen != path else 'as given'})"
    folder = chosen.rsplit("/", 1)[0]
    record = best_record(folder) or {}
    value = record.get("value")
    shown = f"{value:.4g}" if isinstance(value, float) else value  # MnR 1.4615384615384617 reads as 1.462
    return f"{chosen} (best {record.get('metric')} = {shown}, from step {record.get('step')}, epoch {record.get('epoch')})"


def load_trained_model(path: str, checkpoint_format: str = "auto", base_weights: str | None = None,
                       max_frames: int | None = None, max_words: int | None = None, which: str = "latest") -> TrainedModel:  # fmt: skip
    """The model in eval mode, with ``max_frames`` / ``max_words`` overriding the checkpoint's; ``which``: a run
    folder's latest or best checkpoint."""
    checkpoint = resolve_checkpoint(path, which)
    state = load_any_checkpoint(checkpoint, checkpoint_format, max_frames or 12, max_words or 32)
    model, config = restore_model(state, base_weights)
    config.max_frames, config.max_words = max_frames or config.max_frames, max_words or config.max_words
    return TrainedModel(model, config, checkpoint, int(state["step"]), checkpoint_format, max_frames, max_words)


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every weight and buffer (names, dtypes, shapes and bytes, in name order).

    Hashing the weights rather than the checkpoint file makes a PEFT checkpoint's frozen base
    part of the identity, and the same weights saved twice the same model.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()
