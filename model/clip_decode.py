"""A shard sample's JPEG frames -> the uint8 clip tensor the model reads, as CLIP4Clip prepares
pixels (bicubic short side to S, centre crop). One rule for the training stream, on-device
decoding and the evaluator."""

from __future__ import annotations

import warnings

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import decode_jpeg

from model.frame_rule import FrameRule

# torchvision 0.29 marks its JPEG decoder deprecated in favour of torchcodec; it is still the
# fastest batched CPU/GPU JPEG path available here, so the per-process warning is silenced.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning)
# JPEG bytes are wrapped without a copy; decode_jpeg only reads them
warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


def fit_square(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """CLIP4Clip's pixels: bicubic resize of the short side to S (skipped when it already is S),
    centre crop S x S. One rule for CPU worker and on-device decoding, on any device."""
    if min(image.shape[1:]) != image_size:
        image = TF.resize(image, image_size, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(image, [image_size, image_size])


def decode_clip_into(sample: dict, out: torch.Tensor, rule: FrameRule | None = None) -> int:
    """Decodes a sample's JPEG frames into ``out`` (uint8, (T, 3, S, S)); returns how many.

    Bicubic resize of the short side to S and a centre crop, as CLIP4Clip; frames built at
    short side S skip the resize. Slots past the clip's length are zeroed (and masked by the
    caller, CLIP4Clip's video mask). ``rule`` picks the frames when the shard holds more than
    ``out`` has slots (default: the builder's default rule). A frame that fails to decode raises, so the whole
    sample is skipped rather than trained on as a black frame. Writing into a preallocated
    (shared-memory) batch avoids a stack and a copy into shared memory per batch.
    """
    max_frames, image_size = out.shape[0], out.shape[-1]
    names = (rule or FrameRule(max_frames)).members(sample)
    if len(names) > max_frames:
        raise ValueError(f"frame rule for {rule.max_frames} frames used with {max_frames} slots")
    for index, name in enumerate(names):
        out[index] = fit_square(decode_jpeg(torch.frombuffer(sample[name], dtype=torch.uint8)), image_size)
    out[len(names) :] = 0
    return len(names)


def decode_clip(sample: dict, max_frames: int, image_size: int, rule: FrameRule | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """JPEG frames -> uint8 (max_frames, 3, S, S) and a bool frame mask (see decode_clip_into)."""
    frames = torch.empty(max_frames, 3, image_size, image_size, dtype=torch.uint8)
    count = decode_clip_into(sample, frames, rule)
    mask = torch.zeros(max_frames, dtype=torch.bool)
    mask[:count] = True
    return frames, mask
