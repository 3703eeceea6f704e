"""``torchrun [--nnodes N --nproc-per-node G --rdzv-endpoint HOST:PORT] -m train ...``

Also runs as ``python -m train ...`` (one process, no process group). The options are parsed
before the trainer (and torch) is imported, so ``--help`` and an argument error answer at once.
"""

from __future__ import annotations

import sys

from train.config import parse_config


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    import torch.distributed as dist

    from model.backbone import BackboneLoadError
    from model.checkpoint import CheckpointError
    from model.foreign_checkpoints import ForeignCheckpointError
    from model.frame_rule import ShardSettingsError
    from shards.manifest import BuildStateError
    from shards.reader import ShardReadError
    from shards.storage import StorageError
    from train.data import StreamConfigError
    from train.trainer import TrainingSetupError, train

    try:
        train(config)
    except (BackboneLoadError, BuildStateError, CheckpointError, ShardReadError, StorageError, StreamConfigError, TrainingSetupError,
            ForeignCheckpointError, ShardSettingsError) as error:  # fmt: skip
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
