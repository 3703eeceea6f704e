"""Run under ``torchrun --nproc-per-node 2`` (gloo, CPU) by tests/test_accumulation.py: each method trains two
steps with a global batch of 8 and with 4 micro-batches of a global 2, both under DDP; rank 0 prints one JSON line
per method with the relative difference of the parameters (and that the two ranks hold the same weights)."""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist

from runtime.distributed import init_distributed
from tests.test_accumulation import fresh_model, method_config, relative_differences, step_batches
from train.step import Trainer

METHODS = sys.argv[1:] or ["seqTransf", "tightTransf", "DRL WTI + CDCR 3", "EMCL", "EERCF", "DGL"]


def main() -> None:
    info = init_distributed()
    from tests.test_accumulation import METHODS as SHAPES

    for method in METHODS:
        _, frames, image, _ = SHAPES[method]
        batches = step_batches(2, 8, frames, image)
        local = [{k: v[info.rank * 4 : (info.rank + 1) * 4] for k, v in b.items()} for b in batches]  # this rank's half of each step
        results = []
        for config in (method_config(method, batch_size=8), method_config(method, batch_size=2, accum_freq=4)):
            model = fresh_model(config)
            trainer = Trainer(model, config, info.device, total_steps=10, distributed=True)
            for index, batch in enumerate(local):
                torch.manual_seed(1000 + index)
                trainer.step(batch)
            results.append(copy.deepcopy(model))
        whole, worst, name = relative_differences(results[1], results[0])
        flat = torch.cat([p.detach().flatten() for p in results[1].parameters()])
        gathered = [torch.empty_like(flat) for _ in range(info.world_size)]
        dist.all_gather(gathered, flat)
        if info.rank == 0:
            print(json.dumps({"method": method, "relative": whole, "worst_tensor": [name, worst],
                              "ranks_agree": bool(torch.equal(gathered[0], gathered[1]))}), flush=True)  # fmt: skip
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
