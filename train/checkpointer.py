"""The run folder, as a run writes it: checkpoints, the latest pointer, the best one, the records, the card.

The layout's names are runtime/run_folder.py's (the evaluator, the indexer and the card read the same
folder with them); this class is the only writer. Rank 0 writes, every rank waits at a barrier, so
no rank runs ahead of a checkpoint the others may resume from.
"""

from __future__ import annotations

from eval.card import write_card
from model.checkpoint import save_best, save_checkpoint, training_checkpoint
from runtime.distributed import DistInfo, barrier
from runtime.logs import get_logger
from runtime.run_folder import CURVES_NAME, best_record, better, checkpoints_of
from train.config import TrainConfig
from train.resume import agreed_resume_state
from train.run_log import RunLog
from train.step import Trainer


class Checkpointer:
    def __init__(self, config: TrainConfig, info: DistInfo, steps_per_epoch: int) -> None:
        self.config, self.info, self.steps_per_epoch = config, info, steps_per_epoch
        self.folder = checkpoints_of(config.output_dir)  # a folder or an fsspec URL
        self.log = RunLog(config.output_dir, info.is_main)  # metrics.jsonl: what train/records.py writes
        self.resumed_from: str | None = None
        self._delivery = "none"
        self._trainer: Trainer | None = None
        self.backbone: dict = {}  # the backbone record stored in every checkpoint

    def resume_state(self) -> dict | None:
        """The newest checkpoint every rank agrees on (train/resume.py), or None for a fresh run."""
        state, self.resumed_from, self._delivery = agreed_resume_state(self.folder, self.info)
        return state

    def follow(self, trainer: Trainer, backbone: dict) -> None:
        """The trainer whose state the checkpoints hold, and the backbone's record stored beside it."""
        self._trainer, self.backbone = trainer, backbone
        if self.resumed_from is not None:
            logger = get_logger()
            logger.info("resumed from %s at step %d", self.resumed_from, trainer.step_count)
            if self._delivery == "from rank 0":
                logger.warning("%s is not in this node's --output-dir; resumed from rank 0's copy", self.resumed_from)

    def state(self) -> dict:
        return training_checkpoint(self._trainer.state_dict(), config=self.config.to_json(), backbone=self.backbone,
                                   steps_per_epoch=self.steps_per_epoch, seed=self.config.seed)  # fmt: skip

    def save(self, step: int) -> None:
        """checkpoints/step_N.pt, then ``latest`` pointing at it; the oldest beyond two removed."""
        if self.info.is_main:
            save_checkpoint(self.folder, self.state(), step)
        barrier()

    def keep_if_best(self, result: dict, step: int) -> None:
        """checkpoints/best.pt and best.json when this evaluation beats the best one so far (its record survives a resume)."""
        metric = self.config.keep_best
        direction, name = metric.split("/")
        value = result[direction][name]
        if self.info.is_main:
            previous = best_record(self.folder)
            if better(metric, value, previous["value"] if previous and previous["metric"] == metric else None):
                save_best(self.folder, self.state(), {"metric": metric, "value": value, "step": step, "epoch": step / self.steps_per_epoch})
                get_logger().info("best %s so far: %.2f at step %d (checkpoints/best.pt)", metric, value, step)
                self.log.write("best", metric=metric, value=value, step=step)
        barrier()

    def finish(self) -> None:
        """The curves and the results card of a finished run (rank 0)."""
        if not self.info.is_main:
            return
        self.log.save_figure(CURVES_NAME, self.log.read())
        try:
            written = write_card(self.config.output_dir)
            get_logger().info("results card: %s", ", ".join(written))
        except (OSError, ValueError, KeyError) as error:  # the run is done and saved; a card that cannot be drawn says why
            get_logger().warning("the results card could not be written (%s); python -m eval.card %s retries", error, self.config.output_dir)
