"""What a (re)started job resumes from, decided once by rank 0 and shared with every rank.

Only rank 0 writes checkpoints. On a cluster whose nodes do not share ``--output-dir`` (node-local
disks), the other nodes see no checkpoint, or an older one; if each rank picked its own
``latest``, rank 0 would resume at step S while the others started at 0 and every rank would wait
in a collective until the process-group timeout. So every rank reports the checkpoint it sees,
rank 0's choice wins, and when a rank does not see that same file, rank 0 sends it the whole
checkpoint (weights, optimiser, scheduler, step, RNG) over the process group. The weights are
loaded before the model is wrapped for DDP, whose constructor then starts every rank from them.
"""

from __future__ import annotations

import os

import torch.distributed as dist

from model.checkpoint import load_checkpoint
from runtime.distributed import DistInfo, is_distributed
from runtime.run_folder import latest_checkpoint


def _visible_checkpoint(directory: str) -> str | None:
    """The file name ``latest`` points to here, or None (missing folder, no pointer, dangling pointer)."""
    try:
        found = latest_checkpoint(directory)
    except RuntimeError:
        return None
    return os.path.basename(found) if found else None


def agreed_resume_state(directory: str, info: DistInfo) -> tuple[dict | None, str | None, str]:
    """(checkpoint state or None, its path as rank 0 sees it, how it reached this rank)."""
    if not is_distributed():
        path = latest_checkpoint(directory)
        return (load_checkpoint(path), path, "local") if path else (None, None, "none")
    seen = [None] * info.world_size
    dist.all_gather_object(seen, _visible_checkpoint(directory))
    chosen = seen[0]
    if chosen is None:
        return None, None, "none"
    path = os.path.join(directory, chosen)
    if all(name == chosen for name in seen):  # a shared folder: every rank reads the file itself
        return load_checkpoint(path), path, "local"
    box = [load_checkpoint(path) if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0], path, "from rank 0"
