"""Each recipe's training update against a transcription of its source (tests/reference_optimizers.py),
step by step on the same model, batches and gradients: BertAdam with prep_optimizer's groups and
CLIP4Clip's freezing and clamp; TempMe's AdamW and schedule; DGL's AdamW with its lr_scheduler.

The forward pass and loss are this project's (tested against the references elsewhere); what is
compared here is what each source does with the gradients: groups, clipping, update, schedule,
clamp, in its order."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from model.backbone import load_clip
from model.factory import assemble_model
from model.foreign_checkpoints import reference_format, to_reference_layout
from tests.reference_optimizers import (
    DGLScheduler,
    ReferenceBertAdam,
    ReferenceHFAdamW,
    clip4clip_clamp,
    clip4clip_freeze,
    clip4clip_groups,
    dgl_adamw_groups,
    get_cosine_schedule_with_warmup,
)
from train.config import TrainConfig
from train.objective import retrieval_loss
from train.step import RetrievalStep, Trainer, gather_batch

TOTAL_STEPS = 20  # warmup 0.1 -> 2 steps; 12 compared steps cross the end of the warmup into the cosine
STEPS = 12
CPU = torch.device("cpu")


def batch(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(4, 32, dtype=torch.long)
    tokens[:, 0], tokens[:, 1:6], tokens[:, 6] = 49406, torch.randint(300, 40000, (4, 5), generator=generator), 49407
    frames = torch.randint(0, 256, (4, 3, 3, 112, 112), dtype=torch.uint8, generator=generator)
    return {"tokens": tokens, "frames": frames, "mask": torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)}


def forward_backward(model, config, step_batch) -> None:
    model.zero_grad(set_to_none=True)
    if "gradients" in step_batch:  # synthetic gradients: the update alone, without the forward's sensitivity
        for parameter, gradient in zip((p for p in model.parameters() if p.requires_grad), step_batch["gradients"], strict=True):
            parameter.grad = gradient.clone()
        return
    outputs = RetrievalStep(model)(step_batch["tokens"], step_batch["frames"], step_batch["mask"])
    text, video = gather_batch(model, outputs, step_batch["mask"])
    loss, _ = retrieval_loss(model, text, video, config)
    loss.backward()


def reference_named_parameters(model, config) -> list[tuple[str, torch.nn.Parameter]]:
    """The reference model's names for these parameters (the checkpoint layout the loaders are tested on)."""
    checkpoint_format = reference_format(config)
    return [(next(iter(to_reference_layout({name: p}, checkpoint_format))), p) for name, p in model.named_parameters()]


def clip4clip_update(model, config, freeze_layer_num):
    """main_task_retrieval.py: freeze, prep_optimizer + BertAdam, then per step backward ->
    clip_grad_norm_(1.0) -> optimizer.step() -> zero_grad -> clamp."""
    if freeze_layer_num > -1:
        clip4clip_freeze(model.clip.named_parameters(), freeze_layer_num)
    groups = clip4clip_groups(reference_named_parameters(model, config), config.lr, config.coef_lr)
    optimizer = ReferenceBertAdam(groups, lr=config.lr, warmup=config.warmup_fraction, t_total=TOTAL_STEPS, b1=0.9, b2=0.98, e=1e-6,
                                  weight_decay=0.2, max_grad_norm=1.0)  # fmt: skip

    def step(step_batch):
        forward_backward(model, config, step_batch)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        clip4clip_clamp(model.clip.logit_scale)

    return step


def transformers_adamw_update(model, config, groups):
    """transformers' AdamW over ``groups`` + get_cosine_schedule_with_warmup, as TempMe's main.py and X-Pool's
    train.py run it: per step backward -> clip_grad_norm_(1.0) -> optimizer.step() -> scheduler.step() -> clamp."""
    optimizer = ReferenceHFAdamW(groups, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_fraction * TOTAL_STEPS), TOTAL_STEPS)

    def step(step_batch):
        forward_backward(model, config, step_batch)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        torch.clamp_(model.clip.logit_scale.data, max=math.log(100))

    return step


def dgl_update(model, config):
    """DGL main.py --optim AdamW: groups with lr/decay multipliers, lr_scheduler('cos') called with the
    global step before each update, clip_grad_norm_(1.0), step, clamp to [0.1, 4.6052]."""
    groups = dgl_adamw_groups(reference_named_parameters(model, config), config.lr, config.coef_lr, config.weight_decay, [])
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=config.weight_decay)
    scheduler = DGLScheduler(init_lr=config.lr, all_iters=TOTAL_STEPS, slow_start_iters=config.warmup_fraction * TOTAL_STEPS,
                             weight_decay=config.weight_decay)  # fmt: skip
    global_step = [0]

    def step(step_batch):
        optimizer.zero_grad()
        scheduler(optimizer, global_step=global_step[0])
        forward_backward(model, config, step_batch)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        global_step[0] += 1
        torch.clamp_(model.clip.logit_scale.data, 0.1, 4.6052)

    return step


def tempme_update(model, config):
    """TempMe main.py: every trained parameter in one group at clip_lr, weight decay."""
    return transformers_adamw_update(model, config, [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}])


def xpool_update(model, config):
    """X-Pool train.py: clip params ("clip." in the name) at clip_lr, the rest at noclip_lr, every one decayed.
    Its modules/optimization.py is transformers' code, as TempMe's."""
    named = list(model.named_parameters())
    return transformers_adamw_update(model, config, [{"params": [p for n, p in named if "clip." in n], "lr": config.lr * config.coef_lr},
                                                     {"params": [p for n, p in named if "clip." not in n], "lr": config.lr}])  # fmt: skip


def models(config):
    torch.manual_seed(0)
    model = assemble_model(load_clip("tiny-ViT-112", None), config)
    with torch.no_grad():
        model.clip.logit_scale.fill_(math.log(100) - 1e-3)  # at the clamp: each source's bound acts within the run
    return model, copy.deepcopy(model)


def largest_difference(ours, reference) -> tuple[float, str]:
    worst = max(((a - b).abs().max().item() / (b.abs().max().item() + 1e-12), name)
                for (name, a), b in zip(ours.named_parameters(), reference.parameters(), strict=True))  # fmt: skip
    return worst


def synthetic_gradients(model, seed: int) -> dict:
    """Gradients of very different norms per parameter (some above the per-parameter clip of 1, some
    far below), the same for both sides."""
    generator = torch.Generator().manual_seed(1000 + seed)
    gradients = []
    for parameter in (p for p in model.parameters() if p.requires_grad):
        scale = 10 ** (torch.rand((), generator=generator).item() * 4 - 3)
        gradients.append(torch.randn(parameter.shape, generator=generator) * scale / math.sqrt(parameter.numel()))
    return {"gradients": gradients}


def ours_with_gradients(trainer: Trainer, gradients: dict) -> None:
    """Trainer.step's update half (after its backward): global clip, then the recipe's update."""
    forward_backward(trainer.model, trainer.config, gradients)
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.config.grad_clip)
    trainer.update.step()


def run_side_by_side(config, reference_step, ours_model, reference_model) -> list[tuple[float, str]]:
    """The update alone on synthetic gradients: must agree to float rounding."""
    ours = Trainer(ours_model, config, CPU, total_steps=TOTAL_STEPS)
    differences = []
    for index in range(STEPS):
        gradients = synthetic_gradients(ours_model, index)
        ours_with_gradients(ours, gradients)
        reference_step(gradients)
        differences.append(largest_difference(ours_model, reference_model))
    return differences


METHODS = {
    "CLIP4Clip seqTransf": {"sim_header": "seqTransf"},
    "CLIP4Clip tightTransf": {"sim_header": "tightTransf"},
    "DRL wti": {"sim_header": "seqTransf", "interaction": "wti"},
    "EMCL": {"sim_header": "seqTransf", "emcl": True},
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("freeze_layer_num", [1, -1])
def test_bertadam_runs_as_clip4clip_prep_optimizer_and_bertadam(method, freeze_layer_num):
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, lr=1e-2, coef_lr=0.1,
                         freeze_layer_num=freeze_layer_num, **METHODS[method])  # fmt: skip
    assert config.resolved_optimizer() == "bertadam"
    ours, reference = models(config)
    before = {name: p.detach().clone() for name, p in ours.named_parameters()}
    reference_step = clip4clip_update(reference, config, freeze_layer_num)
    trainer = Trainer(ours, config, CPU, total_steps=TOTAL_STEPS)
    assert [p.requires_grad for p in ours.parameters()] == [p.requires_grad for p in reference.parameters()]
    if freeze_layer_num == 1:
        frozen = {name for name, p in ours.clip.named_parameters() if not p.requires_grad}
        assert {"visual.conv1.weight", "token_embedding.weight", "positional_embedding", "visual.ln_pre.weight"} <= frozen
        assert not any(".resblocks.1." in name for name in frozen) and any(".resblocks.0." in name for name in frozen)
    torch.manual_seed(7)  # the same dropout draws on both sides
    trainer.step(batch(0))
    torch.manual_seed(7)
    reference_step(batch(0))
    # BertAdam's first update has lr 0 (lr x warmup_cosine(0)): no weight moves but the clamped temperature
    assert all(torch.equal(before[name], p) for name, p in ours.named_parameters() if name != "clip.logit_scale")
    for index in range(1, STEPS):  # the update alone, synthetic gradients: float rounding apart
        gradients = synthetic_gradients(ours, index)
        ours_with_gradients(trainer, gradients)
        reference_step(gradients)
        worst, name = largest_difference(ours, reference)
        assert worst < 1e-6, f"step {index + 1}: {name} differs by {worst:.2e} (relative)"


@pytest.mark.parametrize("method", ["CLIP4Clip seqTransf", "DRL wti"])
def test_trainer_step_follows_clip4clips_order(method):
    """Trainer.step itself (forward, backward, global clip, BertAdam, clamp) against CLIP4Clip's
    train_epoch on real batches: agreement to 1e-3 after 6 steps (the forward passes amplify float
    rounding where an Adam update normalises a tiny gradient), while torch AdamW is 1e-2 away."""
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, lr=1e-2, coef_lr=0.1, freeze_layer_num=1,
                         **METHODS[method])  # fmt: skip
    ours, reference = models(config)
    reference_step = clip4clip_update(reference, config, 1)
    trainer = Trainer(ours, config, CPU, total_steps=TOTAL_STEPS)
    for index in range(6):
        torch.manual_seed(index)  # the same dropout draws on both sides
        trainer.step(batch(index))
        torch.manual_seed(index)
        reference_step(batch(index))
    worst, name = largest_difference(ours, reference)
    assert worst < 1e-3, f"{name} differs by {worst:.2e} (relative)"
    assert ours.clip.logit_scale.item() <= math.log(100)


def test_the_comparison_would_catch_torch_adamw():
    """Sensitivity: the project's former recipe (torch AdamW, its own groups and schedule) against the
    same BertAdam transcription is far apart, so the test above can fail."""
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, lr=1e-2, coef_lr=0.1, sim_header="seqTransf",
                         optimizer="adamw", freeze_layer_num=-1)  # fmt: skip
    ours, reference = models(config)
    differences = run_side_by_side(config, clip4clip_update(reference, config, -1), ours, reference)
    assert differences[-1][0] > 1e-2, differences[-1]


def test_reference_groups_decay_what_clip4clip_decays():
    """The issue's finding: CLIP4Clip decays CLIP's ln_*.weight, the positional/class embeddings and
    logit_scale (their names lack 'bias'/'LayerNorm.')."""
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, sim_header="seqTransf", freeze_layer_num=-1,
                         coef_lr=1e-3)  # CLIP4Clip's, which a run from trained weights gets by default  # fmt: skip
    model = assemble_model(load_clip("tiny-ViT-112", None), config)
    trainer = Trainer(model, config, CPU, total_steps=TOTAL_STEPS)
    decay_of = {id(p): group["weight_decay"] for group in trainer.optimizer.param_groups for p in group["params"]}
    lr_of = {id(p): group["lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    named = dict(model.named_parameters())
    for name in ("clip.logit_scale", "clip.positional_embedding", "clip.visual.class_embedding", "clip.visual.ln_pre.weight",
                 "clip.ln_final.weight", "pool.blocks.0.ln_1.weight", "pool.frame_position.weight"):  # fmt: skip
        assert decay_of[id(named[name])] == 0.2, name
    for name in ("clip.visual.ln_pre.bias", "pool.blocks.0.attn.in_proj_bias"):
        assert decay_of[id(named[name])] == 0.0, name
    assert lr_of[id(named["clip.logit_scale"])] == pytest.approx(1e-7) and lr_of[id(named["pool.frame_position.weight"])] == 1e-4


def test_tempme_adamw_runs_as_tempme():
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, lr=1e-2, sim_header="meanP",
                         optimizer="tempme-adamw", freeze_layer_num=-1)  # fmt: skip
    ours, reference = models(config)
    differences = run_side_by_side(config, tempme_update(reference, config), ours, reference)
    assert max(d[0] for d in differences) < 1e-5, differences


def test_xpool_adamw_runs_as_xpool():
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, lr=1e-2, coef_lr=0.1, sim_header="meanP",
                         xpool=True, freeze_layer_num=-1)  # fmt: skip
    assert config.resolved_optimizer() == "xpool-adamw"
    ours, reference = models(config)
    differences = run_side_by_side(config, xpool_update(reference, config), ours, reference)
    assert max(d[0] for d in differences) < 1e-5, differences


def test_dgl_adamw_runs_as_dgl():
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, lr=1e-2, coef_lr=0.1, sim_header="meanP",
                         optimizer="dgl-adamw", freeze_layer_num=-1)  # fmt: skip
    ours, reference = models(config)
    with torch.no_grad():
        ours.clip.logit_scale.fill_(0.05)  # below DGL's lower bound: its clamp lifts it to 0.1
        reference.clip.logit_scale.fill_(0.05)
    differences = run_side_by_side(config, dgl_update(reference, config), ours, reference)
    assert max(d[0] for d in differences) < 1e-5, differences
    assert ours.clip.logit_scale.item() == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize("peft, expected", [("none", "bertadam"), ("dgl", "dgl-adamw"), ("tempme", "tempme-adamw"), ("dual", "tempme-adamw"),
                                            ("lora", "adamw")])  # fmt: skip
def test_auto_picks_each_methods_own_optimizer(peft, expected):
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", peft=peft, pretrained="base.pt")
    assert config.resolved_optimizer() == expected
