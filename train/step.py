"""One training step and the state a restart needs: the part of training that is timed.

``Trainer`` owns the encoders' forward under DDP, the gathering of the global batch, the loss,
the backward pass, gradient clipping, the optimiser and schedule, and CLIP4Clip's temperature
clamp. The loop (train/trainer.py, with train/setup.py, train/checkpointer.py and train/records.py) adds data, logs, evaluation, checkpoint files and the agreed
SIGTERM stop around it, and the GPU benchmark (bench/bench_train_gpu.py) calls the same
``step()``, so what is measured is what trains.
"""

from __future__ import annotations

import torch
from torch.nn.parallel import DistributedDataParallel

from model.checkpoint import CheckpointError
from model.clip4clip import CLIP4Clip
from model.features import TextFeatures, VideoFeatures
from model.half_precision import state_is_half
from model.peft import base_reference, check_base, load_trainable_state, trainable_state
from runtime.distributed import gather_with_local_grad
from train.accumulation import accumulate_gradients
from train.config import TrainConfig
from train.data import Batch
from train.objective import retrieval_loss
from train.optim import TrainingUpdate, freeze_lower_layers
from train.precision import TrainingPrecision


class RetrievalStep(torch.nn.Module):
    """The part of a step that DDP wraps: encoders + head features for one local batch."""

    def __init__(self, model: CLIP4Clip) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor):
        # plain tensors (or None) out: DDP walks its outputs, and dataclasses are opaque to it
        video = self.model.encode_video(frames, mask)
        text = self.model.encode_text(tokens)
        return text.pooled, text.tokens, text.mask, video.frames, video.pooled, video.clip_frames, video.patches


def gather_batch(model: CLIP4Clip, outputs: tuple, mask: torch.Tensor) -> tuple[TextFeatures, VideoFeatures]:
    """The global batch's features, each all-gathered only if the similarity reads it.

    The cross encoder is the exception (``gathers_batch`` False): CLIP4Clip's
    ``_cross_similarity`` scores each rank's local batch (B x B cross-encoder passes, no
    all-gather), and so does this trainer; gathering would make the cost grow with the square of
    the world size and change the negatives."""
    text_pooled, text_tokens, text_mask, frames, pooled, clip_frames, patches = outputs
    if not model.similarity.gathers_batch:
        return TextFeatures(text_pooled), VideoFeatures(frames=frames, mask=mask, pooled=None)
    needs_frames = model.similarity.reads_frames
    text = TextFeatures(
        gather_with_local_grad(text_pooled),
        gather_with_local_grad(text_tokens) if text_tokens is not None else None,
        gather_with_local_grad(text_mask) if text_mask is not None else None,
    )
    video = VideoFeatures(
        frames=gather_with_local_grad(frames) if needs_frames else frames,
        mask=gather_with_local_grad(mask) if needs_frames else mask,
        pooled=gather_with_local_grad(pooled) if pooled is not None else None,
        clip_frames=gather_with_local_grad(clip_frames) if clip_frames is not None else None,
        patches=gather_with_local_grad(patches) if patches is not None else None,
    )
    return text, video


def compile_encoders(model: CLIP4Clip, mode: str | None = None) -> None:
    """``torch.compile`` CLIP's image and text transformers and the video pooling head (seqLSTM /
    seqTransf) in place (``nn.Module.compile``): the module objects and so the checkpoint's keys stay
    as they are (assigning ``torch.compile(module)`` would prefix every key with ``_orig_mod.``).
    Compilation happens on the first forward pass. ``mode``: torch.compile's (None: its default)."""
    modules = [model.clip.visual, model.clip.transformer]
    if model.pool is not None and any(True for _ in model.pool.parameters()):
        modules.append(model.pool)
    for module in modules:
        module.compile(mode=mode)


class Trainer:
    """``resume``: a checkpoint's state, loaded before the model is wrapped for DDP (whose
    constructor then broadcasts rank 0's weights, so every rank starts from the same ones)."""

    def __init__(self, model: CLIP4Clip, config: TrainConfig, device: torch.device, total_steps: int, resume: dict | None = None,
                 distributed: bool = False) -> None:  # fmt: skip
        self.model, self.config, self.device = model, config, device
        if config.peft == "none":  # PEFT has frozen all of CLIP already
            freeze_lower_layers(model.clip, config.resolved_freeze_layer_num())
        self.precision = TrainingPrecision(config.precision, device)
        self.precision.prepare(model)  # fp16: CLIP's weights converted before the optimiser sees them (its moments follow)
        self.update = TrainingUpdate(model, config, total_steps, fused=device.type == "cuda" and self.precision.mode != "fp16")
        # PEFT runs store only what trains, plus where the frozen base lives (and its hash)
        self.peft_base = base_reference(config.pretrained) if config.peft != "none" else None
        self.step_count = 0
        if resume is not None:
            self.load_state_dict(resume)
        self.forward_module: torch.nn.Module = RetrievalStep(model)
        if distributed:
            # runtime/distributed.py puts each rank on cuda:LOCAL_RANK
            self.forward_module = DistributedDataParallel(self.forward_module, device_ids=[device.index] if device.type == "cuda" else None)

    def autocast(self):  # noqa: ANN201 - a context manager
        return self.precision.autocast()

    def step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimisation step on this rank's batch; the loss (not synchronised) and its parts.
        With ``--accum-freq K`` the batch is cut into K micro-batches (train/accumulation.py)."""
        tokens = batch["tokens"].to(self.device, non_blocking=True)
        frames = batch["frames"].to(self.device, non_blocking=True)
        mask = batch["mask"].to(self.device, non_blocking=True)
        if self.config.accum_freq > 1:
            loss, parts = accumulate_gradients(self, tokens, frames, mask, self.config.accum_freq, gather_batch)
        else:
            with self.autocast():
                text, video = gather_batch(self.model, self.forward_module(tokens, frames, mask), mask)
                loss, parts = retrieval_loss(self.model, text, video, self.config)
            self.optimizer.zero_grad(set_to_none=True)
            self.precision.backward(loss)
        self.precision.unscale(self.optimizer)
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        # the optimiser, its schedule and the temperature clamp, as the recipe's source orders them
        self.update.step(self.precision.optimizer_step())
        self.step_count += 1
        return loss, parts

    def state_dict(self) -> dict:
        return {
            "model": trainable_state(self.model) if self.peft_base else self.model.state_dict(),
            "base": self.peft_base,
            "update": self.update.state_dict(),
            "precision": self.precision.state_dict(),
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        if isinstance(getattr(self, "forward_module", None), DistributedDataParallel):
            raise RuntimeError("load a resumed state through Trainer(resume=...): DDP has already broadcast rank 0's weights")
        if self.peft_base is not None:
            check_base(state["base"], self.config.pretrained)  # the frozen part must be what was trained on
            load_trainable_state(self.model, state["model"])
        else:
            trained_half, runs_half = state_is_half(state["model"]), self.precision.mode == "fp16"
            if trained_half != runs_half:
                raise CheckpointError(f"the checkpoint's CLIP weights are {'fp16' if trained_half else 'fp32'}: resume it with "
                                      f"{'--precision fp16' if trained_half else 'a --precision other than fp16'}")  # fmt: skip
            self.model.load_state_dict(state["model"])
        self.precision.load_state_dict(state.get("precision") or {})
        stored = state["update"]["rule"] if "update" in state else "adamw"  # checkpoints before --optimizer were torch AdamW
        if stored != self.update.rule:
            how = "--optimizer adamw --freeze-layer-num -1 (it predates both options)" if "update" not in state else f"--optimizer {stored}"
            raise CheckpointError(f"the checkpoint was trained with --optimizer {stored}, this run uses {self.update.rule}: "
                                  f"resume it with {how}")  # fmt: skip
        if "update" in state:
            self.update.load_state_dict(state["update"])
        else:
            self.update.load_state_dict({"optimizer": state["optimizer"], "scheduler": state["scheduler"], "steps_done": state["step"]})
        self.step_count = state["step"]

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.update.optimizer

    def learning_rate(self) -> float:
        return self.update.learning_rate()

