"""One torchrun job that trains several runs in turn on every rank, each with the ``train()`` that
``python -m train`` calls; the process group is set up by the first and ended after the last.

test_train_runs.py trains each method under 2-process DDP this way. A torchrun job per method paid the agent's
start and both ranks' imports of torch and open_clip (about 8 s of each 11 s job) for 2 s of training; the
signals, kills and resumes of a job are tested there with a job per run, as they happen. (The group is kept
between runs: set up a second time on torchrun's store after ``destroy_process_group``, the next run hung here.)

    torchrun --standalone --nproc-per-node 2 -m tests.ddp_cases RUNS.json    # {"name": [train arguments], ...}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from train.config import parse_config
from train.trainer import train


def main(runs_file: str) -> int:
    try:
        for name, argv in json.loads(Path(runs_file).read_text()).items():
            print(f"tests.ddp_cases: training {name}", file=sys.stderr, flush=True)  # a failure's traceback follows its name
            train(parse_config(argv))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
