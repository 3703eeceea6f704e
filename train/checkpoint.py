"""Checkpoints that a restarted job can trust.

Written by rank 0 to ``step_NNNNNNNN.pt`` through a hidden temporary name and an atomic
rename, then a ``latest`` file naming it is replaced the same way. A job killed at any
point leaves either the previous ``latest`` or the new one, never a pointer to a half-
written file. Loading always uses ``weights_only=True``: everything stored is tensors and
plain Python containers (RNG states included, converted to tensors/lists).
"""

from __future__ import annotations

import os
import random
import re
import uuid

import numpy as np
import torch

LATEST = "latest"
_CHECKPOINT = re.compile(r"^step_(\d{8})\.pt$")


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


def _atomic_write(path: str, write) -> None:
    staging = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial-{uuid.uuid4().hex[:8]}")
    try:
        write(staging)
        with open(staging, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def save_checkpoint(directory: str, state: dict, step: int, keep: int = 2) -> str:
    os.makedirs(directory, exist_ok=True)
    name = f"step_{step:08d}.pt"
    _atomic_write(os.path.join(directory, name), lambda path: torch.save(state, path))
    _atomic_write(os.path.join(directory, LATEST), lambda path: open(path, "w").write(name + "\n"))
    older = sorted(n for n in os.listdir(directory) if _CHECKPOINT.match(n) and n != name)
    for stale in older[: max(0, len(older) - (keep - 1))]:
        os.remove(os.path.join(directory, stale))
    return os.path.join(directory, name)


def latest_checkpoint(directory: str) -> str | None:
    pointer = os.path.join(directory, LATEST)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as handle:
        name = handle.read().strip()
    if not _CHECKPOINT.match(name):
        raise RuntimeError(f"{pointer}: does not name a checkpoint ({name!r})")
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise RuntimeError(f"{pointer}: names {name}, which does not exist")
    return path


class CheckpointError(RuntimeError):
    """A file that is not one of this project's checkpoints; names the file."""


def load_checkpoint(path: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - unpickling and zip errors have many types
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line})") from error
    if not isinstance(state, dict) or not {"model", "config", "step"} <= set(state):
        raise CheckpointError(f"{path}: not a checkpoint of this project (expected model, config and step entries)")
    return state
