"""T-MASS: text modelled as a stochastic embedding around its CLIP feature, on X-Pool's pooling.

Reference: Jiamian-Wang/T-MASS-text-video-retrieval (Wang et al., CVPR 2024):
``modules/stochastic_module.py`` (``LinearCosRadius``, ``StochasticText``), ``model/clip_stochastic.py``,
``trainer/trainer_stochastic.py`` (its support loss and its inference by trials), ``config/all_config.py``.
The math: model/tmass.py (X-Pool's pooling is model/xpool.py's, read with ``--xpool-heads`` and
``--xpool-dropout``).

- ``--tmass`` (with ``--sim-header meanP``; it is X-Pool plus the stochastic text, so not with
  ``--xpool``): ``--tmass-prior uniform01|normal`` and ``--tmass-prior-std`` (its ``stochastic_prior``,
  ``stochastic_prior_std``), ``--tmass-support-weight`` (``support_loss_weight``; 0.8 in its MSR-VTT run),
  ``--tmass-trials`` (``stochasic_trials``, 20), ``--tmass-seed`` (the evaluation's draws, so it repeats).
- Its update is X-Pool's (``xpool-adamw``: its train.py is X-Pool's).
- DSL: T-MASS's ``--DSL`` multiplies the scores by a softmax over the captions; ``python -m eval``
  reports its ``dual_softmax`` post-processing beside the raw numbers (``--post``), as for every method.
- Where its code and paper differ, the code is followed; T-MASS keeps the checkpoint that scores best on
  the test split, evaluating ten times per epoch: ``--keep-best`` chooses on ``--val-shards`` instead,
  at ``--eval-every-steps``. Its draws differ in one way (model/tmass.py says why): each caption's
  trials are drawn once, seeded, and shared by every video.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.methods.registry import CheckpointFormat, Method, register
from model.methods.xpool import XPool, clip_frames_problem
from model.options import option

PRIORS = ("uniform01", "normal")


@dataclass(kw_only=True)
class TMASSOptions:
    tmass: bool = option(False, "T-MASS: X-Pool's pooling with a stochastic text (use it with --sim-header meanP, without --xpool)")
    tmass_prior: str = option("uniform01", "T-MASS's --stochastic_prior: sigma ~ U(0, 1) or N(0, --tmass-prior-std)", PRIORS)
    tmass_prior_std: float = option(1.0, "T-MASS's --stochastic_prior_std (its LSMDC run: 3e-3 with the normal prior)")
    tmass_support_weight: float = option(0.0, "T-MASS's --support_loss_weight: the support text's loss (its MSR-VTT run: 0.8)")
    tmass_trials: int = option(20, "T-MASS's --stochasic_trials: samples per (caption, video) at evaluation, the best kept")
    tmass_seed: int = option(0, "seed of the evaluation's draws (T-MASS's are unseeded): the same checkpoint always scores the same")


@register
class TMASS(Method):
    name = "tmass"
    title = "T-MASS: Text Is MASS, stochastic text embeddings (Wang et al., CVPR 2024)"
    reference = "Jiamian-Wang/T-MASS-text-video-retrieval: modules/stochastic_module.py, model/clip_stochastic.py, trainer/trainer_stochastic.py"
    options = TMASSOptions
    optimizer = "xpool-adamw"
    architecture_options = ("tmass",)
    # its released checkpoints: X-Pool's layout plus the radius under stochastic.std_branch.*
    checkpoint_format = CheckpointFormat(
        "tmass",
        rows=(*XPool.checkpoint_format.rows, ("similarity.radius.linear_proj.", "stochastic.std_branch.linear_proj."),
              ("similarity.radius.learnable_scalar", "stochastic.std_branch.learnable_scalar")),  # fmt: skip
        markers=("stochastic.std_branch.",),
        extends="xpool",
        implied_options=lambda keys: {"tmass": True},
    )

    def is_active(self, config: Any) -> bool:
        return config.tmass

    def problem(self, config: Any) -> str | None:
        if config.xpool:
            return "--tmass already pools frames with X-Pool's attention (its --xpool-heads / --xpool-dropout apply); drop --xpool"
        problem = clip_frames_problem("--tmass", config)
        if problem:
            return problem
        if config.tmass_trials < 1 or config.tmass_prior_std <= 0 or config.tmass_support_weight < 0:
            return "--tmass-trials must be at least 1, --tmass-prior-std above 0 and --tmass-support-weight at least 0"
        return None

    def trains_fine_similarity(self, config: Any) -> bool:
        return True

    def similarity(self, config: Any, clip: Any, width: int) -> Any:
        from model.tmass import TMASSSimilarity

        return TMASSSimilarity(width, config.max_frames, config.xpool_heads, config.xpool_dropout, config.tmass_prior, config.tmass_prior_std,
                               config.tmass_support_weight, config.tmass_trials, config.tmass_seed, config.resolved_padding_rule())  # fmt: skip
