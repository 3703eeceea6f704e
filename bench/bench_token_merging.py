"""Video-encoder cost of TempMe's token merging, side by side with CLIP's plain frame encoder.

ViT-B/32 at 224 px (random weights: the cost depends on the token counts, which the schedule
fixes, not on the weights), 12 frames per clip. For each encoder: forward FLOPs per clip
(``torch.utils.flop_counter``, matrix products and attention) and measured clips/s, all encoders
timed in one run, interleaved round by round so that load on the machine hits them alike.

- ``clip``: CLIP4Clip's frame encoder (every frame alone through the ViT, 50 tokens each);
- ``tempme``: TempMe's defaults (ToMe r 2 in layers 0-7, frames joined 2-2-3 at layers 8-9-10,
  30 % / 10 % merged, LoRA 8 on q/k/v);
- ``dual``: the dual-attention seed (TempMe's schedule + 4 global prompts from layer 6);
- ``dgl``: DGL (4 local prompts per frame + 4 global prompts, global-local attention).

    python -m bench.bench_token_merging [--clips 2] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from model import backbone
from model.config import ModelConfig
from model.factory import assemble_model
from runtime.cli import HelpFormatter

ENCODERS = {"clip": "none", "tempme": "tempme", "dual": "dual", "dgl": "dgl"}


def build(peft: str, device: torch.device):
    torch.manual_seed(0)
    clip = backbone.load_clip("ViT-B-32-quickgelu", None)
    model = assemble_model(clip, ModelConfig(model="ViT-B-32-quickgelu", pretrained="random weights", peft=peft))
    return model.to(device).eval()


def flops_per_clip(model, frames: torch.Tensor, mask: torch.Tensor) -> float:
    # the counter's module tracker trips over views of trainable prompts under no_grad: count frozen
    # and train mode: in eval, nn.MultiheadAttention takes a fused kernel the counter does not see
    # (CLIP's attention would count as zero); nothing in these encoders differs between the modes
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model.train()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encode_video(frames, mask)
    model.eval()
    return counter.get_total_flops() / frames.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--clips", type=int, default=2, help="clips per forward")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    models = {name: build(peft, device) for name, peft in ENCODERS.items()}
    frames = torch.randint(0, 256, (args.clips, 12, 3, 224, 224), dtype=torch.uint8, device=device)
    mask = torch.ones(args.clips, 12, dtype=torch.bool, device=device)
    result = {name: {"gflops_per_clip": flops_per_clip(model, frames, mask) / 1e9} for name, model in models.items()}
    seconds = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model.encode_video(frames, mask)
        for _ in range(args.rounds):
            for name, model in models.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                model.encode_video(frames, mask)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds[name].append(time.perf_counter() - start)
    for name in models:
        best = min(seconds[name])
        result[name]["clips_per_s"] = args.clips / best
        result[name]["flops_vs_clip"] = result[name]["gflops_per_clip"] / result["clip"]["gflops_per_clip"]
        result[name]["speed_vs_clip"] = result[name]["clips_per_s"] / (args.clips / min(seconds["clip"]))
    print(json.dumps({"device": str(device), "threads": torch.get_num_threads(), "clips_per_forward": args.clips,
                      "rounds": args.rounds, "encoders": result}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
