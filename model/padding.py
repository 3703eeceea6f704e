"""How padded frames and tokens are treated: the one decision every method reads (``--padding-rule``).

A clip shorter than ``--max-frames`` and a caption shorter than ``--max-words`` are padded. Two rules:

- ``masked`` (this project's default for new runs): padding takes no part anywhere. A clip scores
  the same whatever its padding holds and however much of it there is, so a model's numbers do not
  depend on ``--max-frames`` beyond the clip's length.
- ``reference``: each method's own code, exactly, with padded frames as the reference loaders feed
  them (all-zero tensors after pixel normalisation):
  - DRL WTI / TI (``wti_interaction``): cosines multiplied by both masks, then the max, so a padded
    position scores 0 and wins a max whose real cosines are all negative;
  - EMCL-Net (``get_logits``): the softmax over frames includes padded frames, the mask is applied
    after it (real weights sum to less than 1);
  - EERCF (``_loose_similarity``): no frame mask in the frame and patch softmaxes and sums (the
    video level keeps its masked mean);
  - DGL (``modules/clip.py``) and TempMe (``module_tome_patch.py``): no frame mask inside the
    encoder: the global prompts attend to the padded frames' tokens, padded tokens take part in
    merging; the mask only reaches the mean over frames. The dual-attention seed, built on their
    code, follows them.
  - CLIP4Clip's heads (meanP, seqLSTM, seqTransf, tightTransf) mask padding in its own code, so both
    rules give the same numbers there.

Checkpoints store the rule; ``--recipe`` of a published run and the import of a reference
checkpoint (``--checkpoint-format drl|emcl|eercf|clip4clip``) choose ``reference``.
"""

from __future__ import annotations

import torch

from model.options import PADDING_RULES


def is_reference(rule: str) -> bool:
    if rule not in PADDING_RULES:
        raise ValueError(f"--padding-rule must be one of {PADDING_RULES}, not {rule!r}")
    return rule == "reference"


def reference_pixels(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised (B, T, 3, H, W) or (B*T, 3, H, W) pixels with every padded frame all zeros, as the
    reference loaders feed it (their ``video`` array starts at zero and only real frames are written)."""
    keep = mask.reshape(-1).to(pixels.dtype)
    flat = pixels.reshape(keep.shape[0], *pixels.shape[-3:]) * keep[:, None, None, None]
    return flat.view(pixels.shape)


def encoder_mask(mask: torch.Tensor, rule: str) -> torch.Tensor:
    """The frame mask an encoder that runs CLIP its own way (TempMe, DGL, the seed) uses inside:
    the real one under ``masked``, every frame under ``reference`` (their code has none there)."""
    return torch.ones_like(mask) if is_reference(rule) else mask
