"""Tests build models the way the product does (a ModelConfig through ``CLIP4Clip``); this helper
spells a config from the short arguments the tests read best (head, frames, DRL's interaction,
EMCL-Net's and EERCF's settings as their classes name them)."""

from __future__ import annotations

from dataclasses import asdict

from torch import nn

from model.clip4clip import CLIP4Clip
from model.config import ModelConfig
from model.eercf import EERCFWeights

EMCL_FLAGS = {"bases": "emcl_bases", "iterations": "emcl_iterations", "beta": "emcl_beta", "momentum": "emcl_momentum",
              "lamda": "emcl_lambda", "pool_temperature": "emcl_pool_temperature"}  # fmt: skip


def model_config(head: str = "meanP", max_frames: int = 12, interaction: str = "cosine", emcl: dict | None = None,
                 eercf: EERCFWeights | None = None, padding_rule: str | None = None, **more: object) -> ModelConfig:  # fmt: skip
    """``more``: any other option by its field name (``xpool=True``)."""
    options: dict = {"sim_header": head, "max_frames": max_frames, "interaction": interaction, "padding_rule": padding_rule, **more}
    if emcl is not None:
        options.update(emcl=True, **{EMCL_FLAGS[name]: value for name, value in emcl.items()})
    if eercf is not None:
        options.update(eercf=True, **{f"eercf_{name}_weight": value for name, value in asdict(eercf).items()})
    return ModelConfig(**options)


def clip4clip(clip: nn.Module, head: str = "meanP", max_frames: int = 12, interaction: str = "cosine", emcl: dict | None = None,
              eercf: EERCFWeights | None = None, padding_rule: str | None = None, **more: object) -> CLIP4Clip:  # fmt: skip
    return CLIP4Clip(clip, model_config(head, max_frames, interaction, emcl, eercf, padding_rule, **more))
