"""Transcriptions of the reference training updates, for tests only: written line by line from
the sources named in each docstring, kept as plain per-parameter loops like the originals, so the
project's vectorised rebuilds (train/bert_adam.py, train/decoupled_adamw.py, train/schedules.py)
are checked against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import torch


def warmup_cosine(x, warmup=0.002):
    """CLIP4Clip modules/optimization.py."""
    if x < warmup:
        return x / warmup
    return 0.5 * (1.0 + math.cos(math.pi * x))


class ReferenceBertAdam(torch.optim.Optimizer):
    """CLIP4Clip modules/optimization.py BertAdam (schedule 'warmup_cosine'), DRL/EMCL-Net/EERCF identical."""

    def __init__(self, params, lr, warmup=-1, t_total=-1, b1=0.9, b2=0.999, e=1e-6, weight_decay=0.01, max_grad_norm=1.0):
        super().__init__(params, dict(lr=lr, warmup=warmup, t_total=t_total, b1=b1, b2=b2, e=e, weight_decay=weight_decay,
                                      max_grad_norm=max_grad_norm))  # fmt: skip

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["next_m"] = torch.zeros_like(p.data)
                    state["next_v"] = torch.zeros_like(p.data)
                next_m, next_v = state["next_m"], state["next_v"]
                beta1, beta2 = group["b1"], group["b2"]
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                next_m.mul_(beta1).add_(grad, alpha=1 - beta1)
                next_v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                update = next_m / (next_v.sqrt() + group["e"])
                if group["weight_decay"] > 0.0:
                    update += group["weight_decay"] * p.data
                if group["t_total"] != -1:
                    progress = state["step"] / group["t_total"]
                    lr_scheduled = group["lr"] * warmup_cosine(progress, group["warmup"])
                else:
                    lr_scheduled = group["lr"]
                p.data.add_(-(lr_scheduled * update))
                state["step"] += 1


def clip4clip_groups(named_parameters, lr, coef_lr, weight_decay=0.2):
    """CLIP4Clip main_task_retrieval.py prep_optimizer (DRL, EMCL-Net, EERCF: the same), on the
    reference's parameter names."""
    no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    decay_param_tp = [(n, p) for n, p in named_parameters if not any(nd in n for nd in no_decay)]
    no_decay_param_tp = [(n, p) for n, p in named_parameters if any(nd in n for nd in no_decay)]
    decay_clip_param_tp = [(n, p) for n, p in decay_param_tp if "clip." in n]
    decay_noclip_param_tp = [(n, p) for n, p in decay_param_tp if "clip." not in n]
    no_decay_clip_param_tp = [(n, p) for n, p in no_decay_param_tp if "clip." in n]
    no_decay_noclip_param_tp = [(n, p) for n, p in no_decay_param_tp if "clip." not in n]
    return [
        {"params": [p for n, p in decay_clip_param_tp], "weight_decay": weight_decay, "lr": lr * coef_lr},
        {"params": [p for n, p in decay_noclip_param_tp], "weight_decay": weight_decay},
        {"params": [p for n, p in no_decay_clip_param_tp], "weight_decay": 0.0, "lr": lr * coef_lr},
        {"params": [p for n, p in no_decay_noclip_param_tp], "weight_decay": 0.0},
    ]


def clip4clip_freeze(clip_named_parameters, freeze_layer_num):
    """CLIP4Clip main_task_retrieval.py, 'freeze testing' (linear_patch 2d)."""
    for name, param in clip_named_parameters:
        if name.find("ln_final.") == 0 or name.find("text_projection") == 0 or name.find("logit_scale") == 0 \
                or name.find("visual.ln_post.") == 0 or name.find("visual.proj") == 0:  # fmt: skip
            continue
        elif name.find("visual.transformer.resblocks.") == 0 or name.find("transformer.resblocks.") == 0:
            layer_num = int(name.split(".resblocks.")[1].split(".")[0])
            if layer_num >= freeze_layer_num:
                continue
        param.requires_grad = False


def clip4clip_clamp(logit_scale):
    """CLIP4Clip train_epoch, after optimizer.step()."""
    torch.clamp_(logit_scale.data, max=np.log(100))


class ReferenceHFAdamW(torch.optim.Optimizer):
    """TempMe tvr/models/optimization_adamw.py AdamW (correct_bias True)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias))

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p.data)
                    state["exp_avg_sq"] = torch.zeros_like(p.data)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                beta1, beta2 = group["betas"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=(1.0 - beta1))
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                step_size = group["lr"]
                if group["correct_bias"]:
                    bias_correction1 = 1.0 - beta1 ** state["step"]
                    bias_correction2 = 1.0 - beta2 ** state["step"]
                    step_size = step_size * math.sqrt(bias_correction2) / bias_correction1
                p.data.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.data.add_(p.data, alpha=(-group["lr"] * group["weight_decay"]))


def get_cosine_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps, num_cycles=0.5):
    """TempMe tvr/models/optimization_adamw.py."""

    def lr_lambda(current_step):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        progress = float(current_step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


class DGLScheduler:
    """DGL utils/lr_scheduler.py lr_scheduler, mode 'cos' (the rest of its modes left out)."""

    def __init__(self, init_lr, all_iters, slow_start_iters=0, slow_start_lr=1e-8, end_lr=1e-8, weight_decay=1e-4):
        self.init_lr, self.end_lr, self.slow_start_iters, self.slow_start_lr = init_lr, end_lr, slow_start_iters, slow_start_lr
        self.total_iters = all_iters - self.slow_start_iters
        self.weight_decay = weight_decay

    def __call__(self, optimizer, global_step):
        T = global_step
        if self.slow_start_iters > 0 and T <= self.slow_start_iters:
            lr = (1.0 * T / self.slow_start_iters) * (self.init_lr - self.slow_start_lr)
            lr = min(lr + self.slow_start_lr, self.init_lr)
        else:
            T = T - self.slow_start_iters
            lr = 0.5 * self.init_lr * (1.0 + math.cos(1.0 * T / self.total_iters * math.pi))
        lr = max(lr, self.end_lr)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr * param_group["lr_mult"]
            param_group["weight_decay"] = self.weight_decay * param_group["decay_mult"]


def dgl_adamw_groups(named_parameters, lr, coef_lr, wd, new_added_modules):
    """DGL utils/optimization.py prep_optim_params_groups, --optim AdamW."""
    no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    no_clip = new_added_modules
    decay_param_tp = [(n, p) for n, p in named_parameters if not any(nd in n for nd in no_decay)]
    no_decay_param_tp = [(n, p) for n, p in named_parameters if any(nd in n for nd in no_decay)]
    decay_clip_param_tp = [(n, p) for n, p in decay_param_tp if "clip." in n and not any(nd in n for nd in no_clip)]
    decay_noclip_param_tp = [(n, p) for n, p in decay_param_tp if ("clip." not in n) or any(nd in n for nd in no_clip)]
    no_decay_clip_param_tp = [(n, p) for n, p in no_decay_param_tp if "clip." in n and not any(nd in n for nd in no_clip)]
    no_decay_noclip_param_tp = [(n, p) for n, p in no_decay_param_tp if ("clip." not in n) or any(nd in n for nd in no_clip)]
    return [
        {"params": [p for n, p in decay_clip_param_tp], "weight_decay": wd, "lr": lr, "lr_mult": coef_lr, "decay_mult": 1},
        {"params": [p for n, p in no_decay_clip_param_tp], "weight_decay": 0.0, "lr": lr, "lr_mult": coef_lr, "decay_mult": 0.0},
        {"params": [p for n, p in decay_noclip_param_tp], "weight_decay": wd, "lr": lr, "lr_mult": 1.0, "decay_mult": 1.0},
        {"params": [p for n, p in no_decay_noclip_param_tp], "weight_decay": 0.0, "lr": lr, "lr_mult": 1.0, "decay_mult": 0.0},
    ]
