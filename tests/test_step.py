"""train/step.py: the step the loop and the GPU benchmark share, and the state a restart needs."""

import copy

import pytest
import torch

from model.backbone import load_clip
from model.factory import assemble_model
from train.config import TrainConfig
from train.step import Trainer


def batch(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(4, 32, dtype=torch.long)
    tokens[:, 0], tokens[:, 1:5], tokens[:, 5] = 49406, torch.randint(300, 40000, (4, 4), generator=generator), 49407
    frames = torch.randint(0, 256, (4, 3, 3, 112, 112), dtype=torch.uint8, generator=generator)
    return {"tokens": tokens, "frames": frames, "mask": torch.ones(4, 3, dtype=torch.bool)}


@pytest.mark.parametrize("optimizer", ["bertadam", "adamw", "tempme-adamw", "dgl-adamw"])
@pytest.mark.parametrize("method", [["--sim-header", "seqTransf"], ["--sim-header", "meanP", "--interaction", "wti"]])
def test_a_trainer_restored_from_its_state_takes_the_same_next_step(method, optimizer):
    options = dict(zip([m.removeprefix("--").replace("-", "_") for m in method[::2]], method[1::2], strict=True))
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, lr=1e-3, coef_lr=1.0, optimizer=optimizer,
                         **options)  # fmt: skip
    torch.manual_seed(0)
    model = assemble_model(load_clip("tiny-ViT-112", None), config)
    fresh = copy.deepcopy(model)
    first = Trainer(model, config, torch.device("cpu"), total_steps=10)
    first.step(batch(1))
    assert first.step_count == 1 and first.update.steps_done == 1
    resumed = Trainer(fresh, config, torch.device("cpu"), total_steps=10, resume=copy.deepcopy(first.state_dict()))
    assert resumed.step_count == 1
    loss_first, _ = first.step(batch(2))
    loss_resumed, _ = resumed.step(batch(2))
    assert torch.equal(loss_first, loss_resumed)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name  # Adam's moments and the schedule came along: the same update
    assert first.learning_rate() == resumed.learning_rate()


def test_a_checkpoint_of_another_optimizer_is_refused_by_name():
    from model.checkpoint import CheckpointError

    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, optimizer="adamw")
    model = assemble_model(load_clip("tiny-ViT-112", None), config)
    state = Trainer(model, config, torch.device("cpu"), total_steps=10).state_dict()
    other = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, optimizer="bertadam")
    with pytest.raises(CheckpointError, match="--optimizer adamw"):
        Trainer(copy.deepcopy(model), other, torch.device("cpu"), total_steps=10, resume=state)


def test_logit_scale_is_clamped_at_ln_100_after_every_step():
    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, lr=1e-4, coef_lr=1.0)
    model = assemble_model(load_clip("tiny-ViT-112", None), config)
    with torch.no_grad():
        model.clip.logit_scale.fill_(10.0)  # far above ln 100: one small step cannot bring it back, only the clamp
    trainer = Trainer(model, config, torch.device("cpu"), total_steps=2)
    trainer.step(batch(3))
    assert model.clip.logit_scale.item() <= torch.log(torch.tensor(100.0)).item() + 1e-6


def test_compiled_encoders_keep_the_checkpoint_keys():
    """--compile compiles CLIP's two transformers and the seqTransf head in place: a checkpoint of a compiled run loads into an
    uncompiled model and back (assigning torch.compile(module) would prefix every key with _orig_mod.)."""
    from train.step import compile_encoders

    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, sim_header="seqTransf")
    plain = assemble_model(load_clip("tiny-ViT-112", None), config)
    compiled = copy.deepcopy(plain)
    compile_encoders(compiled)
    assert list(compiled.state_dict()) == list(plain.state_dict())
    assert type(compiled.clip.visual) is type(plain.clip.visual)
    plain.load_state_dict(compiled.state_dict())


def test_a_nan_is_noted_without_a_sync_and_reported_with_its_step_and_batch():
    from train.loss_watch import NonFiniteWatch

    watch = NonFiniteWatch(torch.device("cpu"), window=4)
    for step in (1, 2):
        watch.note(torch.tensor(0.5), step, [f"k{step}"])
    watch.check()  # all finite: nothing to say
    watch.note(torch.tensor(float("inf")), 3, ["bad-key"])
    watch.note(torch.tensor(float("nan")), 4, ["later"])  # the first one is what the error names
    with pytest.raises(FloatingPointError, match=r"loss became inf at step 3; last batch keys \['bad-key'\]"):
        watch.check()


def test_a_checkpoint_from_before_the_optimizer_option_names_both_flags_to_resume_it():
    from model.checkpoint import CheckpointError

    config = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, optimizer="adamw")
    model = assemble_model(load_clip("tiny-ViT-112", None), config)
    state = Trainer(model, config, torch.device("cpu"), total_steps=10).state_dict()
    update = state.pop("update")
    legacy = {**state, "optimizer": update["optimizer"], "scheduler": update["scheduler"]}  # the layout before issue 30
    resumed = Trainer(copy.deepcopy(model), config, torch.device("cpu"), total_steps=10, resume=copy.deepcopy(legacy))
    assert resumed.step_count == 0
    default = TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3)
    with pytest.raises(CheckpointError, match="--optimizer adamw --freeze-layer-num -1"):
        Trainer(copy.deepcopy(model), default, torch.device("cpu"), total_steps=10, resume=legacy)
