"""The training loop: the algorithm, with set-up, checkpoints and records each in its own module.

- train/setup.py: data, model, update and precision, resume (``set_up_run``);
- train/step.py: one optimisation step (``Trainer.step``);
- train/checkpointer.py: the run folder (checkpoints, latest, best, curves, card);
- train/records.py: what the run says and records (start, steps, evaluations).

Every rank runs exactly ``steps_per_epoch`` steps per epoch from an endless stream, so uneven shards
cannot make one rank wait forever in a collective; SIGTERM is agreed on by all ranks (an all-reduced
flag) before anyone saves and exits, for the same reason.
"""

from __future__ import annotations

import os
import signal

import torch

from runtime.distributed import all_reduce_mean
from runtime.logs import setup_logging
from train.config import TrainConfig
from train.device_decode import stop_batch_workers
from train.loss_watch import NonFiniteWatch
from train.records import RunRecords
from train.setup import TrainingSetupError, set_up_run

__all__ = ["TrainingSetupError", "train"]


class StopFlag:
    """Set by SIGTERM (Slurm/torchrun send it before SIGKILL); agreed over ranks every --sync-every-steps steps."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = True

    def agreed(self, device: torch.device) -> bool:
        return all_reduce_mean(1.0 if self.requested else 0.0, device) > 0


def train(config: TrainConfig) -> dict:
    logger = setup_logging(int(os.environ.get("RANK", "0")))
    run = set_up_run(config)
    trainer, checkpointer, records = run.trainer, run.checkpointer, RunRecords(run)
    records.start()
    stop, watch = StopFlag(), NonFiniteWatch(run.info.device, config.sync_every_steps)
    batches, last_eval = run.batches(), None
    records.open_progress()
    try:
        # one loop over steps: with resampled shards an epoch is a step count (train/data.py)
        while trainer.step_count < run.total_steps:
            batch = next(batches)
            records.batch(batch)
            loss, parts = trainer.step(batch)
            step = trainer.step_count
            watch.note(loss, step, batch["keys"])
            records.stepped()
            synced = step % config.sync_every_steps == 0 or step == run.total_steps  # the same steps on every rank
            logged = step % config.log_every_steps == 0 or step == run.total_steps
            if synced or logged:
                watch.check()
            if logged:
                records.train_step(step, loss, parts)
            if run.evaluates_at(step):
                watch.check()
                last_eval = run.evaluate()
                records.evaluation(step, last_eval)
                if config.keep_best:
                    checkpointer.keep_if_best(last_eval, step)
            if synced and stop.agreed(run.info.device):  # a synced step has checked the loss above
                checkpointer.save(step)
                logger.info("SIGTERM: saved step %d, exiting", step)
                return {"step": step, "stopped": True, "eval": last_eval}
            if step % config.checkpoint_every_steps == 0 or step == run.total_steps:
                watch.check()
                checkpointer.save(step)
    finally:
        records.close()
        stop_batch_workers(batches)
    checkpointer.finish()
    return {"step": trainer.step_count, "stopped": False, "eval": last_eval}
