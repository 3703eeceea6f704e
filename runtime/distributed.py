"""Process-group setup from torchrun's environment, or a plain single process without it."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(timeout_minutes: float = 30.0) -> DistInfo:
    """env:// rendezvous when torchrun set WORLD_SIZE (single or multi node); NCCL on GPUs,
    gloo on CPU. Without torchrun: one process, no process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_local_grad(tensor: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, concatenated in rank order; gradient flows only into this rank's rows.

    This is CLIP4Clip's convention (its AllGather backward returns the local slice) and
    open_clip's default (gather without grad, local rows re-inserted). Each rank computes
    the loss over the full global matrix, so the local rows receive the complete gradient
    of the global loss w.r.t. them; DDP then averages parameter gradients over ranks, so
    the update does not scale with world size. (open_clip's gather_with_grad instead sums
    feature gradients over ranks, a world-size times larger gradient.)
    """
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.detach().contiguous())
    gathered[dist.get_rank()] = tensor
    return torch.cat(gathered, dim=0)


def all_reduce_mean(value: float, device: torch.device) -> float:
    if not is_distributed():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item() / dist.get_world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
