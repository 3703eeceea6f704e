"""Checkpoints that a restarted job can trust.

Written by rank 0 to ``step_NNNNNNNN.pt`` in a local folder or any fsspec URL (``s3://...``):
locally through a hidden temporary name and an atomic rename, on an object store by one
complete upload; then a ``latest`` file naming it is replaced the same way. A job killed at any
point leaves either the previous ``latest`` or the new one, never a pointer to a half-
written file. Loading always uses ``weights_only=True``: everything stored is tensors and
plain Python containers (RNG states included, converted to tensors/lists).
"""

from __future__ import annotations

import io
import json
import random

import fsspec
import numpy as np
import torch

from runtime.run_folder import BEST, BEST_RECORD, LATEST, checkpoint_name, stale_checkpoints
from shards.storage import Store


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "gauss": [int(numpy_state[3]), float(numpy_state[4])],
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["gauss"][0], numpy["gauss"][1]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_checkpoint(trainer_state: dict, *, config: dict, backbone: dict, steps_per_epoch: int, seed: int) -> dict:
    """The whole checkpoint of a training run, the one layout this project writes:

    - ``model``, ``base``, ``update`` (optimiser rule, its state and schedule), ``step``: ``Trainer.state_dict()``
      (train/step.py); a PEFT run's ``model`` holds only what trains, ``base`` the frozen file's
      path and SHA-256 (None otherwise);
    - ``backbone``: the activation CLIP trained with, so restore rebuilds the same network;
    - ``epoch``; ``data``: the stream is rebuilt from its start step and seed;
    - ``rng``: every generator's state (tensors and lists, so ``weights_only`` loads it);
    - ``config``: every option of the run (``ModelConfig.from_stored`` reads the model's part).
    Reference codebases' files are converted to the same keys (model/foreign_checkpoints.py)."""
    step = trainer_state["step"]
    return {**trainer_state, "backbone": backbone, "epoch": step // steps_per_epoch, "data": {"start_step": step, "seed": seed},
            "rng": rng_state(), "config": config}  # fmt: skip


def save_checkpoint(directory: str, state: dict, step: int, keep: int = 2) -> str:
    """Writes ``step_N.pt`` under ``directory`` (a folder or any fsspec URL), then points
    ``latest`` at it; each becomes visible only when complete (shards/storage.py Store)."""
    store = Store(directory)
    name = checkpoint_name(step)
    with store.staged(name) as local:
        torch.save(state, local)
    store.write_bytes(LATEST, (name + "\n").encode())
    for stale in stale_checkpoints(store.listdir(""), name, keep):
        store.remove(stale)
    return store.url_of(name)


def save_best(directory: str, state: dict, record: dict) -> str:
    """Writes ``best.pt`` then ``best.json`` (metric, value, step, epoch): the record is written last, so it
    never names a half-written file."""
    store = Store(directory)
    with store.staged(BEST) as local:
        torch.save(state, local)
    store.write_bytes(BEST_RECORD, json.dumps({**record, "checkpoint": BEST}, indent=1).encode("utf-8"))
    return store.url_of(BEST)


def torch_load(path: str) -> object:
    """``torch.load`` of a local path or any fsspec URL, with ``weights_only=True`` (a file must not
    be able to run code). Object stores are read with one GET into memory (torch.load seeks)."""
    if "://" in path:
        with fsspec.open(path, "rb") as handle:
            return torch.load(io.BytesIO(handle.read()), map_location="cpu", weights_only=True)
    return torch.load(path, map_location="cpu", weights_only=True)


class CheckpointError(RuntimeError):
    """A file that is not one of this project's checkpoints; names the file."""


def load_checkpoint(path: str) -> dict:
    try:
        state = torch_load(path)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - unpickling and zip errors have many types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line})") from error
    if not isinstance(state, dict) or not {"model", "config", "step"} <= set(state):
        raise CheckpointError(f"{path}: not a checkpoint of this project (expected model, config and step entries)")
    return state
