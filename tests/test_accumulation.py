"""``--accum-freq`` (issue 35): two optimiser steps with a batch of 8 and with 4 micro-batches of 2 end in
the same parameters, for every method (fp32, within 1e-5 relative), on one process here and on two
gloo ranks (tests/accumulation_ranks.py), and two ``python -m train`` runs end in the same weights."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from model.backbone import load_clip
from model.factory import assemble_model
from train.config import TrainConfig
from train.step import Trainer

CPU = torch.device("cpu")
SOT, EOT = 49406, 49407
# model, frames, image size and options of each method (PEFT methods on the 12-layer tiny CLIP at 224 px, as their tests)
METHODS = {
    "meanP": ("tiny-ViT-112", 3, 112, {"sim_header": "meanP"}),
    "seqLSTM": ("tiny-ViT-112", 3, 112, {"sim_header": "seqLSTM"}),
    "seqTransf": ("tiny-ViT-112", 3, 112, {"sim_header": "seqTransf"}),
    "tightTransf": ("tiny-ViT-112", 3, 112, {"sim_header": "tightTransf"}),
    "DRL WTI + CDCR 3": ("tiny-ViT-112", 3, 112, {"sim_header": "seqTransf", "interaction": "wti", "cdcr": 3}),
    "DRL TI + CDCR 1": ("tiny-ViT-112", 3, 112, {"sim_header": "meanP", "interaction": "ti", "cdcr": 1}),
    "EMCL": ("tiny-ViT-112", 3, 112, {"sim_header": "seqTransf", "emcl": True}),
    "EERCF": ("tiny-ViT-112", 3, 112, {"sim_header": "seqTransf", "eercf": True}),
    "EERCF Pearson on patches": ("tiny-ViT-112", 3, 112, {"sim_header": "seqTransf", "eercf": True, "eercf_strongpatch_weight": 0.5,
                                                          "eercf_cdcl_patch_weight": 1.0}),
    "DGL": ("tiny-ViT-12L", 2, 224, {"sim_header": "meanP", "peft": "dgl", "dgl_prompt_layers": 2, "pretrained": "base"}),
    "TempMe": ("tiny-ViT-12L", 12, 224, {"sim_header": "meanP", "peft": "tempme", "pretrained": "base"}),
    "dual": ("tiny-ViT-12L", 12, 224, {"sim_header": "meanP", "peft": "dual", "pretrained": "base"}),
}


def step_batches(steps: int, size: int, frames: int, image: int) -> list[dict]:
    batches = []
    for seed in range(steps):
        generator = torch.Generator().manual_seed(100 + seed)
        tokens = torch.zeros(size, 16, dtype=torch.long)
        tokens[:, 0] = SOT
        tokens[:, 1:6] = torch.randint(300, 40000, (size, 5), generator=generator)
        for row in range(size):
            tokens[row, 6 + row % 4] = EOT
        mask = torch.ones(size, frames, dtype=torch.bool)
        mask[1, frames // 2 :] = False  # short clips in the batch
        mask[5, 1:] = False
        batches.append({"tokens": tokens, "frames": torch.randint(0, 256, (size, frames, 3, image, image), dtype=torch.uint8, generator=generator),
                        "mask": mask})  # fmt: skip
    return batches


def method_config(method: str, **options) -> TrainConfig:
    model, frames, _, extra = METHODS[method]
    return TrainConfig(train_shards="", output_dir="", model=model, max_frames=frames, lr=1e-3, coef_lr=1.0, optimizer="adamw",
                       warmup_fraction=0.0, max_words=16, **extra, **options)  # fmt: skip


def fresh_model(config: TrainConfig):
    torch.manual_seed(0)
    model = assemble_model(load_clip(config.model, None), config)
    with torch.no_grad():  # trainable parts that start at zero (LoRA B, frame embeddings) moved, so that they show
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and parameter.abs().max() == 0:
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(len(name))))
    return model


def relative_differences(a: torch.nn.Module, b: torch.nn.Module) -> tuple[float, float, str]:
    """||a - b|| / ||b|| over every parameter together (the bound), and the largest per tensor (printed). A
    tensor whose gradient is zero but for rounding (an attention key bias, the bias before a softmax that
    ignores shifts) takes Adam steps made of that rounding in either run, so single tensors can differ by
    more; the gradients agree elementwise (test_the_gradient_itself_is_the_whole_batchs)."""
    pairs = list(zip(a.named_parameters(), b.parameters(), strict=True))
    whole = torch.cat([(x - y).flatten() for (_, x), y in pairs]).norm() / torch.cat([y.flatten() for _, y in pairs]).norm()
    worst, name = max(((x - y).norm().item() / (y.norm().item() + 1e-12), n) for (n, x), y in pairs)
    return whole.item(), worst, name


def train_two_steps(model, config: TrainConfig, batches: list[dict]) -> None:
    trainer = Trainer(model, config, CPU, total_steps=10)
    for index, batch in enumerate(batches):
        torch.manual_seed(1000 + index)  # the same random draws at the start of each step in both runs
        trainer.step(batch)


@pytest.mark.parametrize("method", METHODS)
def test_four_micro_batches_of_two_step_as_one_batch_of_eight(method):
    whole = method_config(method, batch_size=8)
    accumulated = method_config(method, batch_size=2, accum_freq=4)
    model = fresh_model(whole)
    other = copy.deepcopy(model)
    before = copy.deepcopy(model)
    _, frames, image, _ = METHODS[method]
    batches = step_batches(2, 8, frames, image)
    train_two_steps(model, whole, batches)
    train_two_steps(other, accumulated, batches)
    whole_difference, worst, name = relative_differences(other, model)
    moved, _, _ = relative_differences(model, before)
    print(f"{method}: parameters moved {moved:.1e}; accumulated vs whole {whole_difference:.1e} (worst tensor {worst:.1e}, {name})")
    assert moved > 1e-3  # the steps changed the weights, so equality is not trivial
    assert whole_difference < 1e-5, f"{method}: {whole_difference:.2e} relative (worst tensor {name}: {worst:.2e})"
    for (name, buffer), reference in zip(other.named_buffers(), model.buffers(), strict=True):  # EMCL's bases moved once per step
        assert torch.allclose(buffer.float(), reference.float(), rtol=1e-5, atol=1e-7), name


def test_the_gradient_itself_is_the_whole_batchs():
    """Before any optimiser: the accumulated gradient of every parameter equals the whole batch's to float
    rounding (elementwise, relative to each tensor's largest element), and so does the loss."""
    whole = method_config("DRL WTI + CDCR 3", batch_size=8)
    accumulated = method_config("DRL WTI + CDCR 3", batch_size=2, accum_freq=4)
    model = fresh_model(whole)
    other = copy.deepcopy(model)
    batch = step_batches(1, 8, 3, 112)[0]
    losses = []
    for net, config in ((model, whole), (other, accumulated)):
        trainer = Trainer(net, config, CPU, total_steps=10)
        trainer.update.step = lambda *_: None  # gradients only
        torch.manual_seed(5)
        losses.append(trainer.step(batch)[0])
    assert torch.equal(losses[0], losses[1])
    for (name, x), y in zip(model.named_parameters(), other.parameters(), strict=True):
        if x.grad is not None:
            assert (x.grad - y.grad).abs().max() <= 1e-5 * x.grad.abs().max() + 1e-8, name  # 1e-8: rounding of gradients that are 0


def test_without_the_corrections_accumulation_is_not_exact():
    """The checks above can fail: open_clip's plain scheme sums the temperature's gradient K times."""
    import train.accumulation as accumulation

    whole = method_config("seqTransf", batch_size=8, grad_clip=0.0)  # no clip: the gradients as the backward passes left them
    accumulated = method_config("seqTransf", batch_size=2, accum_freq=4, grad_clip=0.0)
    model = fresh_model(whole)
    other = copy.deepcopy(model)
    batch = step_batches(1, 8, 3, 112)[0]
    original = accumulation.loss_side_parameters
    accumulation.loss_side_parameters = lambda _: []
    try:
        for net, config in ((model, whole), (other, accumulated)):
            trainer = Trainer(net, config, CPU, total_steps=10)
            trainer.update.step = lambda *_: None
            torch.manual_seed(5)
            trainer.step(batch)
    finally:
        accumulation.loss_side_parameters = original
    torch.testing.assert_close(other.clip.logit_scale.grad, 4 * model.clip.logit_scale.grad, rtol=1e-4, atol=0)


def test_a_batch_that_does_not_split_is_refused():
    config = method_config("meanP", batch_size=2, accum_freq=4)
    trainer = Trainer(fresh_model(config), config, CPU, total_steps=10)
    batch = step_batches(1, 6, 3, 112)[0]
    with pytest.raises(ValueError, match="does not split into 4 micro-batches"):
        trainer.step(batch)


@pytest.mark.integration  # two processes, several models
def test_two_gloo_ranks_accumulate_as_one_batch():
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "tests.accumulation_ranks"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["method"] for row in rows] == ["seqTransf", "tightTransf", "DRL WTI + CDCR 3", "EMCL", "EERCF", "DGL"]
    for row in rows:
        print(row)
        assert row["ranks_agree"] and row["relative"] < 1e-5, row


@pytest.mark.integration  # builds shards, two training runs
def test_two_command_line_runs_end_in_the_same_weights(sample_dataset, tmp_path):
    """The sample order of a run does not depend on how its batch is split: the stream delivers whole steps."""
    from model.checkpoint import load_checkpoint
    from pipeline.annotations import load_annotations
    from pipeline.build import BuildOptions, build_shards
    from pipeline.extract import ExtractionSettings
    from runtime.run_folder import latest_checkpoint
    from shards.storage import Store
    from train.__main__ import main as train_main

    shards = tmp_path / "shards"
    build_shards(load_annotations(str(sample_dataset / "annotations.jsonl")), str(sample_dataset / "videos"), Store(str(shards)),
                 ExtractionSettings(short_side=112), BuildOptions(samples_per_shard=3, workers=1, show_progress=False))  # fmt: skip
    common = ["--train-shards", str(shards), "--model", "tiny-ViT-112", "--sim-header", "seqTransf", "--max-frames", "3",
              "--steps-per-epoch", "2", "--epochs", "1", "--workers", "0", "--optimizer", "adamw", "--lr", "1e-3",
              "--checkpoint-every-steps", "2", "--log-every-steps", "1"]  # fmt: skip
    assert train_main([*common, "--output-dir", str(tmp_path / "whole"), "--batch-size", "8"]) == 0
    assert train_main([*common, "--output-dir", str(tmp_path / "split"), "--batch-size", "2", "--accum-freq", "4"]) == 0
    states = [load_checkpoint(latest_checkpoint(str(tmp_path / run / "checkpoints")))["model"] for run in ("whole", "split")]
    difference = torch.cat([(states[1][k] - states[0][k]).flatten().float() for k in states[0]]).norm()
    scale = torch.cat([states[0][k].flatten().float() for k in states[0]]).norm()
    print(f"relative difference of the final weights: {(difference / scale).item():.1e}")
    assert (difference / scale).item() < 1e-5
    logged = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in logged if r.get("kind") == "config")["config"]["accum_freq"] == 4
