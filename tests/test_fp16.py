"""``--precision fp16`` as CLIP4Clip, DRL, EMCL-Net and EERCF train (issue 34): CLIP's weights converted by
their ``convert_weights``, fp16 activations with fp32 LayerNorms, BertAdam's fp16 moments and fp16
arithmetic, checked step by step against a transcription of that code (tests/reference_fp16.py and
ReferenceBertAdam); ``amp-fp16`` (DGL's ``--precision amp``); checkpoints keep their dtype."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from model.backbone import load_clip
from model.factory import assemble_model
from model.half_precision import convert_weights, is_half
from tests.reference_fp16 import reference_convert_weights
from tests.test_optimizers import CPU, TOTAL_STEPS, batch, clip4clip_update, forward_backward
from train.config import TrainConfig
from train.objective import retrieval_loss
from train.step import RetrievalStep, Trainer, gather_batch

STEPS = 6


def _config(**options) -> TrainConfig:
    options = {"sim_header": "seqTransf", **options}
    return TrainConfig(train_shards="", output_dir="", model="tiny-ViT-112", max_frames=3, lr=1e-2, coef_lr=0.1, freeze_layer_num=-1,
                       **options)  # fmt: skip


def _models(config):
    torch.manual_seed(0)
    model = assemble_model(load_clip("tiny-ViT-112", None), config)
    with torch.no_grad():
        model.clip.logit_scale.fill_(math.log(100) - 1e-3)
    return model, copy.deepcopy(model)


def test_convert_weights_is_clips_rule():
    ours, reference = _models(_config())
    convert_weights(ours.clip)
    reference_convert_weights(reference.clip)
    ours_dtypes = {name: p.dtype for name, p in ours.named_parameters()}
    assert ours_dtypes == {name: p.dtype for name, p in reference.named_parameters()}
    half = {name for name, dtype in ours_dtypes.items() if dtype == torch.float16}
    assert {"clip.visual.conv1.weight", "clip.visual.proj", "clip.text_projection", "clip.transformer.resblocks.0.attn.in_proj_weight",
            "clip.transformer.resblocks.0.attn.out_proj.weight", "clip.transformer.resblocks.0.mlp.c_fc.bias"} <= half  # fmt: skip
    assert not any(name.startswith(("pool.", "similarity.")) for name in half)  # the heads stay fp32
    fp32 = {"clip.token_embedding.weight", "clip.positional_embedding", "clip.visual.class_embedding", "clip.logit_scale",
            "clip.ln_final.weight", "clip.visual.ln_pre.bias"}  # fmt: skip
    assert all(ours_dtypes[name] == torch.float32 for name in fp32)
    # forward: fp16 activations, LayerNorm in fp32, features out as fp32, equal to the reference's modules
    tokens, frames, mask = batch(0)["tokens"], batch(0)["frames"], batch(0)["mask"]
    with torch.no_grad():
        mine = ours.logits(ours.encode_text(tokens), ours.encode_video(frames, mask))
        theirs = reference.logits(reference.encode_text(tokens), reference.encode_video(frames, mask))
    assert mine.dtype == torch.float32 and torch.equal(mine, theirs) and is_half(ours.clip)


def _gradients(model, seed: int) -> dict:
    """Synthetic gradients of very different norms (some above the per-parameter clip), in each parameter's dtype."""
    generator = torch.Generator().manual_seed(2000 + seed)
    gradients = []
    for parameter in (p for p in model.parameters() if p.requires_grad):
        scale = 10 ** (torch.rand((), generator=generator).item() * 4 - 3)
        gradients.append((torch.randn(parameter.shape, generator=generator) * scale / math.sqrt(parameter.numel())).to(parameter.dtype))
    return {"gradients": gradients}


def _fp16_ulps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in fp16 steps between two fp16 tensors (their bit patterns as ordered integers)."""
    def ordered(x: torch.Tensor) -> torch.Tensor:
        bits = x.view(torch.int16).to(torch.int32)
        return torch.where(bits < 0, -32768 - bits, bits)

    return int((ordered(a) - ordered(b)).abs().max())


def test_n_steps_of_fp16_bertadam_equal_the_references():
    """From the same weights and gradients: CLIP4Clip's convert_weights + its per-parameter BertAdam loop
    (with clip_grad_norm_ per parameter) against the Trainer under --precision fp16. fp16 parameters must be
    identical; fp32 ones (heads, embeddings) agree to float rounding as in tests/test_optimizers.py."""
    config = _config(precision="fp16")
    ours, reference = _models(config)
    reference_convert_weights(reference.clip)
    reference_step = clip4clip_update(reference, config, -1)
    trainer = Trainer(ours, config, CPU, total_steps=TOTAL_STEPS)
    assert trainer.precision.mode == "fp16" and is_half(ours.clip)
    for index in range(STEPS):
        gradients = _gradients(ours, index)
        forward_backward(ours, config, gradients)
        torch.nn.utils.clip_grad_norm_(ours.parameters(), config.grad_clip)
        trainer.update.step(trainer.precision.optimizer_step())
        reference_step(gradients)
        for (name, mine), theirs in zip(ours.named_parameters(), reference.parameters(), strict=True):
            assert mine.dtype == theirs.dtype, name
            if mine.dtype == torch.float16:
                assert _fp16_ulps(mine.detach(), theirs.detach()) == 0, f"step {index + 1}: {name}: {_fp16_ulps(mine.detach(), theirs.detach())} ulp"
            else:
                assert (mine - theirs).abs().max() <= 1e-6 * (theirs.abs().max() + 1e-12), f"step {index + 1}: {name}"
    state = trainer.optimizer.state[ours.clip.visual.conv1.weight]
    assert state["next_m"].dtype == state["next_v"].dtype == torch.float16  # BertAdam's moments follow the weights
    moved = [name for (name, p), before in zip(ours.named_parameters(), _models(config)[0].parameters(), strict=True)
             if p.dtype == torch.float16 and not torch.equal(p.detach(), before.detach().half())]  # fmt: skip
    assert moved  # the run did update fp16 weights: the comparison above is not of untouched tensors


def test_amp_fp16_scales_the_loss_and_unscales_before_the_clip():
    """DGL's amp: autocast fp16 + GradScaler, gradients unscaled before clip_grad_norm_, the step through the scaler."""
    config = _config(precision="amp-fp16", optimizer="adamw")
    ours, reference = _models(config)
    trainer = Trainer(ours, config, CPU, total_steps=TOTAL_STEPS)
    assert trainer.precision.scaler is not None and not is_half(ours.clip)
    scaler = torch.amp.GradScaler("cpu")
    optimizer = copy.deepcopy(trainer.optimizer)  # the same groups, on the reference's parameters
    optimizer.param_groups.clear()
    optimizer.state.clear()
    for group in trainer.optimizer.param_groups:
        names = {id(p) for p in group["params"]}
        params = [r for o, r in zip(ours.parameters(), reference.parameters(), strict=True) if id(o) in names]
        optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": params})
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, trainer.update.scheduler.lr_lambdas[0])
    for index in range(3):
        step_batch = batch(index)
        torch.manual_seed(11)
        loss, _ = trainer.step(step_batch)
        torch.manual_seed(11)
        with torch.autocast("cpu", dtype=torch.float16):
            outputs = RetrievalStep(reference)(step_batch["tokens"], step_batch["frames"], step_batch["mask"])
            text, video = gather_batch(reference, outputs, step_batch["mask"])
            reference_loss, _ = retrieval_loss(reference, text, video, config)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(reference_loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(reference.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        with torch.no_grad():
            reference.clip.logit_scale.clamp_(0, math.log(100))
        assert torch.equal(loss, reference_loss)
    for (name, mine), theirs in zip(ours.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(mine, theirs), name
    assert trainer.precision.state_dict()["scaler"]["scale"] == scaler.state_dict()["scale"]


def test_fp16_is_refused_with_peft_and_a_checkpoint_keeps_its_dtype(tmp_path):
    from train.config import config_problem

    assert "--precision fp16" in config_problem(_config(precision="fp16", peft="dgl", sim_header="meanP", pretrained="x.pt"))
    config = _config(precision="fp16")
    model, _ = _models(config)
    trainer = Trainer(model, config, CPU, total_steps=TOTAL_STEPS)
    state = trainer.state_dict()
    assert state["model"]["clip.visual.conv1.weight"].dtype == torch.float16
    resumed_model, _ = _models(config)
    resumed = Trainer(resumed_model, config, CPU, total_steps=TOTAL_STEPS, resume=state)
    assert is_half(resumed.model.clip) and torch.equal(resumed_model.clip.visual.conv1.weight, model.clip.visual.conv1.weight)
    other_model, _ = _models(_config(precision="fp32"))
    from model.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="--precision fp16"):
        Trainer(other_model, _config(precision="fp32"), CPU, total_steps=TOTAL_STEPS, resume=state)
    # evaluation rebuilds it in fp16 too
    from model.restore import restore_model

    restored, _ = restore_model({"model": state["model"], "config": config.to_json(), "step": 0, "backbone": {"activation": "GELU"}})
    assert is_half(restored.clip)
