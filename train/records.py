"""What a run tells people and writes down as it goes: its start, its steps, its evaluations.

- the start: the backbone, the batch and steps, CLIP's learning rate, every option with where its
  value came from, the recipe's global batch on the GPUs at hand, and the ``config`` record;
- every ``--log-every-steps`` steps: a line (or the progress bar) and a ``train`` record: loss and
  its parts, learning rates, clips/s, the temperature, skipped samples, memory, draws per source;
- every evaluation: a line and an ``eval`` record; TensorBoard scalars with ``--tensorboard``.

Records go to metrics.jsonl through the checkpointer's run log (the run folder is its); rank 0 writes.
"""

from __future__ import annotations

import os
import socket
import time

import torch
from tqdm import tqdm

from model.peft import count_parameters
from runtime.distributed import all_reduce_mean
from runtime.logs import get_logger, progress_enabled
from train.config import recipe_of, step_batch_size
from train.data import Batch
from train.optim import clip_rate_note
from train.recipes import accumulation_lines, effective_options, option_origins
from train.setup import Run
from train.tensorboard import TensorBoard


class RunRecords:
    def __init__(self, run: Run) -> None:
        self.run, self.log, self.logger = run, run.checkpointer.log, get_logger()
        self.window_start, self.window_steps = time.perf_counter(), 0
        self.skipped_by_worker: dict = {}
        self.drawn_by_worker: dict = {}
        self.bar = None
        self.board = TensorBoard(None)

    def start(self) -> None:
        """The run's opening lines and its ``config`` record."""
        run, config, logger = self.run, self.run.config, self.logger
        trainable, total = count_parameters(run.model)
        backbone = run.checkpointer.backbone
        logger.info("backbone: %s", backbone["description"])
        logger.info(
            "run: %s, world size %d, global batch %s (%d per rank), %d steps (%d per epoch), %s%s, %s of %s parameters trained; "
            "options and records in %s/metrics.jsonl", config.sim_header, run.info.world_size,
            f"{step_batch_size(config)} = {config.accum_freq} micro-batches of {config.batch_size}" if config.accum_freq > 1 else str(config.batch_size),
            run.local_batch, run.total_steps, run.steps_per_epoch, run.info.device, f" {run.trainer.precision.mode}", f"{trainable:,}",
            f"{total:,}", config.output_dir.rstrip("/"),
        )  # fmt: skip
        rate_line, rate_is_wrong = clip_rate_note(config)
        (logger.warning if rate_is_wrong else logger.info)(rate_line)
        recipe = recipe_of(config)
        if not run.info.is_main:
            return
        logger.info("options%s:\n  %s", f" (recipe {recipe.name}, from {recipe.source})" if recipe else "",
                    "\n  ".join(effective_options(config, recipe.options if recipe else {})))  # fmt: skip
        if recipe is not None and "batch_size" in recipe.options:
            published = recipe.options["batch_size"] * recipe.options.get("accum_freq", 1)
            logger.info("the recipe's global batch %d on the GPUs you have (this run: %d):\n  %s", published, step_batch_size(config),
                        "\n  ".join(accumulation_lines(published)))  # fmt: skip
        self.log.write(
            "config",
            config=config.to_json(),
            recipe={"name": recipe.name, "source": recipe.source, "published": recipe.published, "options": recipe.options} if recipe else None,
            world_size=run.info.world_size,
            steps_per_epoch=run.steps_per_epoch,
            resumed_from=run.checkpointer.resumed_from,
            start_step=run.trainer.step_count,
            trainable_parameters=trainable,
            total_parameters=total,
            backbone=backbone,
            hardware=hardware_record(run.info.device),
            precision=run.trainer.precision.mode,
            option_origins=option_origins(config, recipe.options if recipe else {}),
            train_sources=[[source.location, source.weight] for source in run.sources],
            validation_held_out=run.held_out,
        )  # fmt: skip

    def open_progress(self) -> None:
        """The progress bar and TensorBoard, once the first batches are on their way."""
        run = self.run
        if progress_enabled(run.info.is_main):
            self.bar = tqdm(total=run.total_steps, initial=run.trainer.step_count, desc="train", unit="step", dynamic_ncols=True)
        self.board = TensorBoard(run.config.output_dir if run.config.tensorboard and run.info.is_main else None)

    def batch(self, batch: Batch) -> None:
        """The data workers' running counts that came with a batch."""
        self.skipped_by_worker[batch["worker"]] = batch["skipped"]
        self.drawn_by_worker[batch["worker"]] = batch.get("drawn_per_source") or []
        if "skipped_on_device" in batch:
            self.skipped_by_worker["device"] = {**dict.fromkeys(batch["skipped"], 0), "undecodable": batch["skipped_on_device"]}

    def stepped(self) -> None:
        self.window_steps += 1
        if self.bar is not None:
            self.bar.update(1)

    def train_step(self, step: int, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        """The ``train`` record of this step: the loss averaged over ranks, rates and counts since the last one."""
        run, config = self.run, self.run.config
        elapsed = time.perf_counter() - self.window_start
        skipped = {k: sum(s[k] for s in self.skipped_by_worker.values()) for k in next(iter(self.skipped_by_worker.values()))}
        record = {"step": step, "epoch": (step - 1) // run.steps_per_epoch, "loss": all_reduce_mean(loss.item(), run.info.device),
                  "lr": run.trainer.learning_rate(), "clips_per_s": self.window_steps * step_batch_size(config) / elapsed,
                  "logit_scale": run.model.logit_scale().item(), "skipped_rank0": skipped}  # fmt: skip
        if run.info.device.type == "cuda":
            record["max_memory_gib"] = round(torch.cuda.max_memory_allocated(run.info.device) / 2**30, 2)
        record["lr_groups"] = run.trainer.update.group_learning_rates()
        if len(run.sources) > 1:  # samples this rank's workers drew from each source so far
            record["drawn_per_source_rank0"] = {source.location: sum(counts[i] for counts in self.drawn_by_worker.values() if counts)
                                                for i, source in enumerate(run.sources)}  # fmt: skip
        if len(parts) > 1:
            record["loss_parts"] = {name: value.item() for name, value in parts.items()}
        if self.bar is None:
            self.logger.info("step %d/%d  loss %.4f  lr %.2e  %.1f clips/s", step, run.total_steps, record["loss"], record["lr"],
                             record["clips_per_s"])  # fmt: skip
        else:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", clips_per_s=f"{record['clips_per_s']:.1f}")
        self.log.write("train", **record)
        self.board.scalars(step, {"train/loss": record["loss"], "train/lr": record["lr"], "train/clips_per_s": record["clips_per_s"]})
        self.window_start, self.window_steps = time.perf_counter(), 0

    def evaluation(self, step: int, result: dict) -> None:
        self.logger.info("eval at step %d: t2v R@1 %.1f R@5 %.1f MnR %.1f | v2t R@1 %.1f (%d videos, %d captions)", step,
                         result["t2v"]["R1"], result["t2v"]["R5"], result["t2v"]["MnR"], result["v2t"]["R1"], result["num_videos"],
                         result["num_captions"])  # fmt: skip
        self.log.write("eval", step=step, **result)
        self.board.scalars(step, {f"eval/{d}_{m}": result[d][m] for d in ("t2v", "v2t") for m in ("R1", "R5", "R10", "MnR")})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.board.close()


def hardware_record(device: torch.device) -> dict:
    """Where the run ran, for its card."""
    record = {"device": str(device), "host": socket.gethostname(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "world_size": int(os.environ.get("WORLD_SIZE", "1"))}  # fmt: skip
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record
