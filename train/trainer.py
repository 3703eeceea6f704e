"""The training loop: data, model, loss, optimiser and checkpoints wired together.

Every rank runs exactly ``steps_per_epoch`` steps per epoch from an endless stream, so
uneven shards cannot make one rank wait forever in a collective; SIGTERM is agreed on by
all ranks (an all-reduced flag) before anyone saves and exits, for the same reason.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time

import numpy as np
import torch
from tqdm import tqdm

from eval.card import write_card
from eval.encode import encode_split
from eval.scoring import split_metrics
from model import backbone
from model.checkpoint import save_best, save_checkpoint, set_rng_state, training_checkpoint
from model.clip4clip import CLIP4Clip
from model.factory import assemble_model
from model.foreign_checkpoints import load_any_checkpoint
from model.frame_rule import frame_rule_for
from model.peft import count_parameters
from model.restore import restore_model
from runtime.distributed import DistInfo, all_reduce_mean, barrier, init_distributed, is_distributed
from runtime.logs import progress_enabled, setup_logging, weights_follow
from runtime.run_folder import best_record, better
from shards.probe import probe_location
from shards.reader import ReadPolicy, shard_urls
from train.config import TrainConfig, recipe_of, step_batch_size
from train.data import StreamConfig
from train.device_decode import stop_batch_workers, training_batches
from train.loss_watch import NonFiniteWatch
from train.mixture import MixtureError, Source, epoch_items, resolve_sources, split_sources, validation_is_held_out
from train.optim import clip_rate_note
from train.recipes import accumulation_lines, effective_options, option_origins
from train.resume import agreed_resume_state
from train.run_log import RunLog
from train.step import Trainer, compile_encoders
from train.tensorboard import TensorBoard


class TrainingSetupError(ValueError):
    """Options that cannot work together; raised before any step runs."""


class _StopFlag:
    """Set by SIGTERM (Slurm/torchrun send it before SIGKILL); agreed over ranks every --sync-every-steps steps."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = True

    def agreed(self, device: torch.device) -> bool:
        return all_reduce_mean(1.0 if self.requested else 0.0, device) > 0


def _steps_per_epoch(config: TrainConfig, sources: list[Source]) -> int:
    if config.steps_per_epoch:
        return config.steps_per_epoch
    items = epoch_items(sources, config.caption_mode)
    if items is None:
        unknown = next(s.location for s in sources if s.samples is None)
        raise TrainingSetupError(f"{unknown}: no manifest.json to count samples; pass --steps-per-epoch")
    return max(1, items // step_batch_size(config))


def read_policy(config: TrainConfig) -> ReadPolicy:
    return ReadPolicy(retries=config.read_retries, timeout_s=config.read_timeout)


def hardware_record(device: torch.device) -> dict:
    """Where the run ran, for its card."""
    record = {"device": str(device), "host": socket.gethostname(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "world_size": int(os.environ.get("WORLD_SIZE", "1"))}  # fmt: skip
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def initial_model(config: TrainConfig) -> CLIP4Clip:
    """The model a fine-tuning run (``--init-from``) starts from, refused if its head or
    similarity is not the one this run trains."""
    state = load_any_checkpoint(config.init_from, config.checkpoint_format, config.max_frames, config.max_words)
    if config.padding_rule is not None:  # asked for: the imported model runs under this run's rule
        state["config"] = {**state["config"], "padding_rule": config.padding_rule}
    model, stored = restore_model(state)
    config.padding_rule = stored.resolved_padding_rule()  # what the run's checkpoints record
    wanted = config.architecture()
    differing = [f"--{name.replace('_', '-')} {value} there, {wanted.get(name)} here"
                 for name, value in stored.architecture().items() if value != wanted.get(name)]  # fmt: skip
    if differing:
        raise TrainingSetupError(f"{config.init_from}: built for other options ({'; '.join(differing)})")
    return model.train()


def build_model(config: TrainConfig) -> CLIP4Clip:
    if config.init_from:
        return initial_model(config)
    config.padding_rule = config.resolved_padding_rule()  # recorded as it ran
    with weights_follow():  # open_clip's "initialized randomly" is wrong when a checkpoint is resumed next
        clip = backbone.load_clip(config.model, config.pretrained, config.activation)
    if config.grad_checkpointing:
        clip.set_grad_checkpointing(True)
    return assemble_model(clip, config)


def evaluate(model: CLIP4Clip, config: TrainConfig, info: DistInfo, tokenize) -> dict:
    urls = shard_urls(config.val_shards)
    image_size = backbone.input_size(model.clip)
    rule = frame_rule_for(config.val_shards, config.max_frames, image_size)
    split = encode_split(model, urls, tokenize, info.device, config.max_frames, config.max_words, image_size,
                         config.eval_batch_size, read_policy(config), rule)  # fmt: skip
    result = split_metrics(model, split, info.device)
    return {
        "t2v": result["t2v"],
        "v2t": result["v2t"],
        "num_videos": len(split.keys),
        "num_captions": len(split.captions),
        "skipped": split.skipped,
    }


def train(config: TrainConfig) -> dict:
    logger = setup_logging(int(os.environ.get("RANK", "0")))
    for location, is_input in ((*((source, True) for source in split_sources(config.train_shards)), (config.val_shards, True),
                                (config.output_dir, False))):  # fmt: skip
        if location:
            probe_location(location, must_exist=is_input)  # the real cause, in seconds, before anything heavy
    try:  # every source's shards and samples counted now, not after CLIP has loaded
        sources = resolve_sources(config.train_shards, config.train_weights)
    except MixtureError as error:
        raise TrainingSetupError(str(error)) from error
    held_out = validation_is_held_out(config.val_shards, [source.location for source in sources])
    if held_out is False:
        logger.warning("warning: --val-shards %s is also a training source: its numbers measure fit, not held-out retrieval "
                       "(pipeline build --val-fraction F holds out a split of your own data)", config.val_shards)  # fmt: skip
    info = init_distributed(config.dist_timeout)
    if config.batch_size % info.world_size:
        raise TrainingSetupError(f"global batch {config.batch_size} is not divisible by world size {info.world_size}")
    local_batch = step_batch_size(config) // info.world_size  # the stream delivers a whole step; the Trainer cuts micro-batches
    steps_per_epoch = _steps_per_epoch(config, sources)
    total_steps = steps_per_epoch * config.epochs
    _seed_everything(config.seed)  # same initial weights on every rank

    named_size = (backbone.config_architecture(config.model) or {}).get("image_size") if config.model else None
    for location in filter(None, (*(source.location for source in sources), config.val_shards)):
        frame_rule_for(location, config.max_frames, named_size)  # refuse unusable shards before CLIP loads
    model = build_model(config).to(info.device)
    if config.compile:
        compile_encoders(model)
    image_size = backbone.input_size(model.clip)
    rules = {frame_rule_for(source.location, config.max_frames, image_size) for source in sources}
    if len(rules) > 1:
        raise TrainingSetupError(f"the training sources were built with different frame rules ({sorted(map(str, rules))}): "
                                 "rebuild them alike (python -m pipeline resample) to mix them")  # fmt: skip
    train_rule = rules.pop()
    tokenize = backbone.tokenizer_for(config.model)

    checkpoints = f"{config.output_dir.rstrip('/')}/checkpoints"  # a folder or an fsspec URL
    log = RunLog(config.output_dir, info.is_main)
    state, resume, delivery = agreed_resume_state(checkpoints, info)
    trainer = Trainer(model, config, info.device, total_steps, resume=state, distributed=is_distributed())
    step = trainer.step_count
    if state is not None:
        set_rng_state(state["rng"])
        logger.info("resumed from %s at step %d", resume, step)
        if delivery == "from rank 0":
            logger.warning("%s is not in this node's --output-dir; resumed from rank 0's copy", resume)
    else:
        _seed_everything(config.seed + info.rank)

    trainable, total = count_parameters(model)
    backbone_record = {"activation": backbone.activation_name(model.clip), "description": backbone.describe_backbone(model.clip)}
    logger.info("backbone: %s", backbone_record["description"])
    logger.info(
        "run: %s, world size %d, global batch %s (%d per rank), %d steps (%d per epoch), %s%s, %s of %s parameters trained; "
        "options and records in %s/metrics.jsonl", config.sim_header, info.world_size,
        f"{step_batch_size(config)} = {config.accum_freq} micro-batches of {config.batch_size}" if config.accum_freq > 1 else str(config.batch_size),
        local_batch, total_steps,
        steps_per_epoch, info.device, f" {trainer.precision.mode}", f"{trainable:,}", f"{total:,}", config.output_dir.rstrip("/"),
    )  # fmt: skip
    rate_line, rate_is_wrong = clip_rate_note(config)
    (logger.warning if rate_is_wrong else logger.info)(rate_line)
    recipe = recipe_of(config)
    if info.is_main:
        logger.info("options%s:\n  %s", f" (recipe {recipe.name}, from {recipe.source})" if recipe else "",
                    "\n  ".join(effective_options(config, recipe.options if recipe else {})))  # fmt: skip
        if recipe is not None and "batch_size" in recipe.options:
            published = recipe.options["batch_size"] * recipe.options.get("accum_freq", 1)
            logger.info("the recipe's global batch %d on the GPUs you have (this run: %d):\n  %s", published, step_batch_size(config),
                        "\n  ".join(accumulation_lines(published)))  # fmt: skip
        log.write(
            "config",
            config=config.to_json(),
            recipe={"name": recipe.name, "source": recipe.source, "published": recipe.published, "options": recipe.options} if recipe else None,
            world_size=info.world_size,
            steps_per_epoch=steps_per_epoch,
            resumed_from=resume,
            start_step=step,
            trainable_parameters=trainable,
            total_parameters=total,
            backbone=backbone_record,
            hardware=hardware_record(info.device),
            precision=trainer.precision.mode,
            option_origins=option_origins(config, recipe.options if recipe else {}),
            train_sources=[[source.location, source.weight] for source in sources],
            validation_held_out=held_out,
        )

    def checkpoint_state() -> dict:
        return training_checkpoint(trainer.state_dict(), config=config.to_json(), backbone=backbone_record,
                                   steps_per_epoch=steps_per_epoch, seed=config.seed)  # fmt: skip

    def save() -> None:
        if info.is_main:
            save_checkpoint(checkpoints, checkpoint_state(), step)
        barrier()

    def keep_if_best(result: dict, at_step: int) -> None:
        """checkpoints/best.pt when this evaluation beats the best one so far (its record survives a resume)."""
        direction, metric = config.keep_best.split("/")
        value = result[direction][metric]
        if info.is_main:
            previous = best_record(checkpoints)
            if better(config.keep_best, value, previous["value"] if previous and previous["metric"] == config.keep_best else None):
                save_best(checkpoints, checkpoint_state(), {"metric": config.keep_best, "value": value, "step": at_step, "epoch": at_step / steps_per_epoch})
                logger.info("best %s so far: %.2f at step %d (checkpoints/best.pt)", config.keep_best, value, at_step)
                log.write("best", metric=config.keep_best, value=value, step=at_step)
        barrier()

    stop = _StopFlag()
    watch = NonFiniteWatch(info.device, config.sync_every_steps)
    mixture = tuple((source.urls, source.weight) for source in sources) if len(sources) > 1 else ()
    stream = StreamConfig(urls=sources[0].urls, sources=mixture, batch_size=local_batch, max_frames=config.max_frames, max_words=config.max_words, image_size=image_size,
                          seed=config.seed, read_policy=read_policy(config), slice_position=train_rule.slice_position,
                          **config.data_options())  # fmt: skip
    last_eval: dict | None = None
    batches = training_batches(stream, tokenize, info.rank, info.world_size, step, info.device)
    window_start, window_steps, skipped_by_worker, drawn_by_worker = time.perf_counter(), 0, {}, {}
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True) if progress_enabled(info.is_main) else None
    board = TensorBoard(config.output_dir if config.tensorboard and info.is_main else None)

    def close_progress() -> None:
        if bar is not None:
            bar.close()
        board.close()
        stop_batch_workers(batches)

    # one loop over steps: with resampled shards an epoch is a step count (train/data.py)
    while step < total_steps:
        epoch = step // steps_per_epoch
        batch = next(batches)
        skipped_by_worker[batch["worker"]] = batch["skipped"]
        drawn_by_worker[batch["worker"]] = batch.get("drawn_per_source") or []
        if "skipped_on_device" in batch:
            skipped_by_worker["device"] = {**dict.fromkeys(batch["skipped"], 0), "undecodable": batch["skipped_on_device"]}
        loss, loss_parts = trainer.step(batch)
        step = trainer.step_count
        watch.note(loss, step, batch["keys"])
        window_steps += 1
        if bar is not None:
            bar.update(1)
        synced_step = step % config.sync_every_steps == 0 or step == total_steps  # the same steps on every rank
        logged_step = step % config.log_every_steps == 0 or step == total_steps
        if synced_step or logged_step:
            watch.check()
        if logged_step:
            elapsed = time.perf_counter() - window_start
            skipped = {k: sum(s[k] for s in skipped_by_worker.values()) for k in next(iter(skipped_by_worker.values()))}
            record = {"step": step, "epoch": epoch, "loss": all_reduce_mean(loss.item(), info.device), "lr": trainer.learning_rate(),
                      "clips_per_s": window_steps * step_batch_size(config) / elapsed, "logit_scale": model.logit_scale().item(), "skipped_rank0": skipped}  # fmt: skip
            if info.device.type == "cuda":
                record["max_memory_gib"] = round(torch.cuda.max_memory_allocated(info.device) / 2**30, 2)
            record["lr_groups"] = trainer.update.group_learning_rates()
            if len(sources) > 1:  # samples this rank's workers drew from each source so far
                record["drawn_per_source_rank0"] = {source.location: sum(counts[i] for counts in drawn_by_worker.values() if counts)
                                                    for i, source in enumerate(sources)}  # fmt: skip
            if len(loss_parts) > 1:
                record["loss_parts"] = {name: value.item() for name, value in loss_parts.items()}
            if bar is None:
                logger.info("step %d/%d  loss %.4f  lr %.2e  %.1f clips/s", step, total_steps, record["loss"], record["lr"], record["clips_per_s"])
            else:
                bar.set_postfix(loss=f"{record['loss']:.4f}", clips_per_s=f"{record['clips_per_s']:.1f}")
            log.write("train", **record)
            board.scalars(step, {"train/loss": record["loss"], "train/lr": record["lr"], "train/clips_per_s": record["clips_per_s"]})
            window_start, window_steps = time.perf_counter(), 0
        at_epoch_end = step % steps_per_epoch == 0
        epochs_done = step // steps_per_epoch
        by_epochs = at_epoch_end and (epochs_done % config.eval_every_epochs == 0 or step == total_steps)
        if config.val_shards and ((config.eval_every_steps and step % config.eval_every_steps == 0) or (not config.eval_every_steps and by_epochs)):
            watch.check()
            last_eval = evaluate(model, config, info, tokenize)
            logger.info("eval at step %d: t2v R@1 %.1f R@5 %.1f MnR %.1f | v2t R@1 %.1f (%d videos, %d captions)", step,
                        last_eval["t2v"]["R1"], last_eval["t2v"]["R5"], last_eval["t2v"]["MnR"], last_eval["v2t"]["R1"],
                        last_eval["num_videos"], last_eval["num_captions"])  # fmt: skip
            log.write("eval", step=step, **last_eval)
            if config.keep_best:
                keep_if_best(last_eval, step)
            board.scalars(step, {f"eval/{d}_{m}": last_eval[d][m] for d in ("t2v", "v2t") for m in ("R1", "R5", "R10", "MnR")})
        if synced_step and stop.agreed(info.device):  # a synced step has checked the loss above
            save()
            logger.info("SIGTERM: saved step %d, exiting", step)
            close_progress()
            return {"step": step, "stopped": True, "eval": last_eval}
        if step % config.checkpoint_every_steps == 0 or step == total_steps:
            watch.check()
            save()
    close_progress()
    if info.is_main:
        log.save_figure("curves.png", log.read())
        try:
            written = write_card(config.output_dir)
            logger.info("results card: %s", ", ".join(written))
        except (OSError, ValueError, KeyError) as error:  # the run is done and saved; a card that cannot be drawn says why
            logger.warning("the results card could not be written (%s); python -m eval.card %s retries", error, config.output_dir)
    return {"step": step, "stopped": False, "eval": last_eval}
