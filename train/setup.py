"""Everything a run needs before its first step: the data, the model, the update and precision, a resume.

``set_up_run`` checks what can be checked in seconds first (every location, the sources' shards and
sample counts, the frame rules) and only then loads CLIP, so a typo never waits for weights. The
order of the random draws is fixed here: every rank seeds alike before the model is built (same
initial weights), then each rank seeds apart (or takes the checkpoint's RNG state on a resume).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from eval.encode import encode_split
from eval.scoring import split_metrics
from model import backbone
from model.checkpoint import set_rng_state
from model.clip4clip import CLIP4Clip
from model.factory import assemble_model
from model.foreign_checkpoints import load_any_checkpoint
from model.frame_rule import FrameRule, frame_rule_for
from model.restore import restore_model
from runtime.distributed import DistInfo, init_distributed, is_distributed
from runtime.logs import get_logger, weights_follow
from shards.probe import probe_location
from shards.reader import ReadPolicy, shard_urls
from train.checkpointer import Checkpointer
from train.config import TrainConfig, step_batch_size
from train.data import Batch, StreamConfig
from train.device_decode import training_batches
from train.mixture import MixtureError, Source, epoch_items, resolve_sources, split_sources, validation_is_held_out
from train.step import Trainer, compile_encoders


class TrainingSetupError(ValueError):
    """Options that cannot work together; raised before any step runs."""


@dataclass
class Run:
    """A run ready to step: its options, ranks, sources, model, ``Trainer`` and checkpointer."""

    config: TrainConfig
    info: DistInfo
    sources: list[Source]
    held_out: bool | None  # whether --val-shards is apart from every training source (None: no --val-shards)
    local_batch: int
    steps_per_epoch: int
    total_steps: int
    model: CLIP4Clip
    image_size: int
    train_rule: FrameRule
    tokenize: object
    trainer: Trainer
    checkpointer: Checkpointer

    def batches(self) -> Iterator[Batch]:
        """This rank's batches from the run's current step on (a resumed run skips what it has seen)."""
        config, mixture = self.config, tuple((s.urls, s.weight) for s in self.sources) if len(self.sources) > 1 else ()
        stream = StreamConfig(urls=self.sources[0].urls, sources=mixture, batch_size=self.local_batch, max_frames=config.max_frames,
                              max_words=config.max_words, image_size=self.image_size, seed=config.seed, read_policy=read_policy(config),
                              slice_position=self.train_rule.slice_position, **config.data_options())  # fmt: skip
        return training_batches(stream, self.tokenize, self.info.rank, self.info.world_size, self.trainer.step_count, self.info.device)

    def evaluates_at(self, step: int) -> bool:
        """Every --eval-every-steps steps, else at the end of every --eval-every-epochs epochs and of the run."""
        config = self.config
        if not config.val_shards:
            return False
        if config.eval_every_steps:
            return step % config.eval_every_steps == 0
        epochs_done = step // self.steps_per_epoch
        return step % self.steps_per_epoch == 0 and (epochs_done % config.eval_every_epochs == 0 or step == self.total_steps)

    def evaluate(self) -> dict:
        """The model on --val-shards, scored as the evaluator scores it."""
        config, urls = self.config, shard_urls(self.config.val_shards)
        rule = frame_rule_for(config.val_shards, config.max_frames, self.image_size)
        split = encode_split(self.model, urls, self.tokenize, self.info.device, config.max_frames, config.max_words, self.image_size,
                             config.eval_batch_size, read_policy(config), rule)  # fmt: skip
        result = split_metrics(self.model, split, self.info.device)
        return {"t2v": result["t2v"], "v2t": result["v2t"], "num_videos": len(split.keys), "num_captions": len(split.captions),
                "skipped": split.skipped}  # fmt: skip


def read_policy(config: TrainConfig) -> ReadPolicy:
    return ReadPolicy(retries=config.read_retries, timeout_s=config.read_timeout)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def steps_per_epoch_of(config: TrainConfig, sources: list[Source]) -> int:
    if config.steps_per_epoch:
        return config.steps_per_epoch
    items = epoch_items(sources, config.caption_mode)
    if items is None:
        unknown = next(s.location for s in sources if s.samples is None)
        raise TrainingSetupError(f"{unknown}: no manifest.json to count samples; pass --steps-per-epoch")
    return max(1, items // step_batch_size(config))


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


def checked_sources(config: TrainConfig) -> tuple[list[Source], bool | None]:
    """Every location probed and every source's shards and samples counted, before anything heavy."""
    for location, is_input in ((*((source, True) for source in split_sources(config.train_shards)), (config.val_shards, True),
                                (config.output_dir, False))):  # fmt: skip
        if location:
            probe_location(location, must_exist=is_input)  # the real cause, in seconds
    try:
        sources = resolve_sources(config.train_shards, config.train_weights)
    except MixtureError as error:
        raise TrainingSetupError(str(error)) from error
    held_out = validation_is_held_out(config.val_shards, [source.location for source in sources])
    if held_out is False:
        get_logger().warning("warning: --val-shards %s is also a training source: its numbers measure fit, not held-out retrieval "
                             "(pipeline build --val-fraction F holds out a split of your own data)", config.val_shards)  # fmt: skip
    return sources, held_out


def set_up_run(config: TrainConfig) -> Run:
    sources, held_out = checked_sources(config)
    info = init_distributed(config.dist_timeout)
    if config.batch_size % info.world_size:
        raise TrainingSetupError(f"global batch {config.batch_size} is not divisible by world size {info.world_size}")
    local_batch = step_batch_size(config) // info.world_size  # the stream delivers a whole step; the Trainer cuts micro-batches
    steps_per_epoch = steps_per_epoch_of(config, sources)
    seed_everything(config.seed)  # same initial weights on every rank
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
    checkpointer = Checkpointer(config, info, steps_per_epoch)
    state = checkpointer.resume_state()
    trainer = Trainer(model, config, info.device, steps_per_epoch * config.epochs, resume=state, distributed=is_distributed())
    checkpointer.follow(trainer, backbone_record(model))
    if state is not None:
        set_rng_state(state["rng"])
    else:
        seed_everything(config.seed + info.rank)
    return Run(config, info, sources, held_out, local_batch, steps_per_epoch, steps_per_epoch * config.epochs, model, image_size,
               rules.pop(), backbone.tokenizer_for(config.model), trainer, checkpointer)  # fmt: skip


def backbone_record(model: CLIP4Clip) -> dict:
    return {"activation": backbone.activation_name(model.clip), "description": backbone.describe_backbone(model.clip)}
