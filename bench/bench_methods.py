"""Every method on the generated benchmark, same data, same budget: the README's method table.

Data: tools.make_sample_data moving shapes (colour x shape x direction, 3 captions per clip),
train and held-out test shards built with the real pipeline at short side 112. Model: the
CPU-sized tiny-ViT-112 trained from scratch (no pretrained weights exist offline), 8 frames,
batch 16, the same steps and learning rate for every method, several seeds.

Reported per method (mean over seeds): text-to-video R@1 / R@5 / MnR on the clips it trained on
(multi-caption), and R@1 / MnR on the held-out test clips. For methods with a fine similarity,
EERCF's two-stage R@1 on the training clips with --rerank-topk. The tightTransf row "on a
meanP-trained CLIP" starts from the CLIP of the same seed's meanP run (CLIP4Clip always trains its
cross encoder on a pretrained CLIP), new modules at lr 1e-3, CLIP at 1e-4. The PEFT rows freeze a random
tiny CLIP (saved to a file as the "pretrained" base): they measure what the trainable part
alone learns, not what it does on real CLIP weights.

    python -m bench.bench_methods [--out bench_out/methods] [--seeds 0 1 2] [--steps 150]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re

import numpy as np
import open_clip
import torch

from eval.__main__ import main as eval_main
from model.checkpoint import load_checkpoint
from pipeline.annotations import load_annotations
from pipeline.build import BuildOptions, build_shards
from pipeline.extract import ExtractionSettings
from runtime.cli import HelpFormatter
from runtime.run_folder import latest_checkpoint
from shards.storage import Store
from tools.make_sample_data import make_sample_data
from train.config import parse_config
from train.trainer import train

METHODS = {
    "meanP": ["--sim-header", "meanP"],
    "seqLSTM": ["--sim-header", "seqLSTM"],
    "seqTransf": ["--sim-header", "seqTransf"],
    "tightTransf": ["--sim-header", "tightTransf"],
    "DRL (seqTransf + WTI + CDCR)": ["--sim-header", "seqTransf", "--interaction", "wti", "--cdcr", "3", "--cdcr-alpha1", "0.14", "--cdcr-alpha2", "0"],
    "DRL TI (meanP + TI)": ["--sim-header", "meanP", "--interaction", "ti"],
    # CLIP4Clip trains its cross encoder on a pretrained CLIP; here: the same seed's meanP run's CLIP
    "tightTransf on a meanP-trained CLIP": ["--sim-header", "tightTransf", "--pretrained", "CONTENT", "--lr", "1e-3", "--coef-lr", "0.1"],
    "Two-stage search over WTI (seqTransf + WTI + coarse loss)": ["--sim-header", "seqTransf", "--interaction", "wti", "--coarse-weight", "1"],
    "EMCL-Net (seqTransf + EMCL)": ["--sim-header", "seqTransf", "--emcl"],
    "PEFT LoRA r4, frozen random CLIP": ["--sim-header", "meanP", "--peft", "lora", "--lora-rank", "4", "--pretrained", "BASE"],
    # issue 17: the schedules scaled to the tiny CLIP's 2 layers and 8 frames; their own learning rates
    # (prompts/LoRA alone on a frozen CLIP: 2e-3 barely moves them in 150 steps)
    "TempMe (LoRA 8 + token merging), frozen random CLIP": ["--sim-header", "meanP", "--peft", "tempme", "--merge-layers", "1",
                                                            "--merge-frames", "8", "--lora-rank", "8", "--lr", "1e-2", "--pretrained", "BASE"],
    "DGL (linear latent), frozen random CLIP": ["--sim-header", "meanP", "--peft", "dgl", "--dgl-prompt-layers", "2", "--lr", "2e-2",
                                                "--pretrained", "BASE"],
    "Dual-attention seed, frozen random CLIP": ["--sim-header", "meanP", "--peft", "dual", "--frame-per-seg", "2-8", "--seg-num", "4-1",
                                                "--seg-layer", "0-1", "--sel-layer", "0", "--lora-rank", "8", "--lr", "2e-2",
                                                "--pretrained", "BASE"],
    # issue 18: EERCF's own model (video/frame/patch granularities), evaluated with its two stages
    "EERCF (seqTransf, video + frame + patch)": ["--sim-header", "seqTransf", "--eercf"],
    "PEFT prompts+LoRA, frozen random CLIP": [
        "--sim-header",
        "meanP",
        "--peft",
        "prompts+lora",
        "--lora-rank",
        "4",
        "--pretrained",
        "BASE",
    ],
}


def build_data(out: str, num_videos: int) -> dict[str, str]:
    data = os.path.join(out, "data")
    shards = {split: os.path.join(out, "shards", split) for split in ("train", "test")}
    if all(os.path.exists(os.path.join(path, "manifest.json")) for path in shards.values()):
        return shards
    make_sample_data(data, num_videos=num_videos, broken=False)
    for split, path in shards.items():
        records = load_annotations(os.path.join(data, f"{split}.jsonl"))
        build_shards(records, os.path.join(data, "videos"), Store(path), ExtractionSettings(short_side=112),
                     BuildOptions(samples_per_shard=8, workers=2, show_progress=False))  # fmt: skip
    return shards


def run_folder(out: str, name: str, seed: int) -> str:
    return os.path.join(out, "runs", f"{re.sub(r'[^A-Za-z0-9]+', '_', name)}_seed{seed}")


def content_clip(args: argparse.Namespace, shards: dict[str, str], seed: int) -> str:
    """The CLIP of this seed's meanP run, saved in OpenAI's key layout (trained first if missing)."""
    path = os.path.join(args.out, f"meanP_clip_seed{seed}.pt")
    if os.path.exists(path):
        return path
    run = run_folder(args.out, "meanP", seed)
    if latest_checkpoint(os.path.join(run, "checkpoints")) is None:
        config = parse_config([*common_flags(args, shards, run, seed), *METHODS["meanP"]])
        with contextlib.redirect_stdout(io.StringIO()):
            train(config)
    state = load_checkpoint(latest_checkpoint(os.path.join(run, "checkpoints")))
    torch.save({k.removeprefix("clip."): v for k, v in state["model"].items() if k.startswith("clip.")}, path)
    return path


def common_flags(args: argparse.Namespace, shards: dict[str, str], run: str, seed: int) -> list[str]:
    return ["--train-shards", shards["train"], "--output-dir", run, "--model", "tiny-ViT-112", "--batch-size", "16",
            "--steps-per-epoch", str(args.steps), "--epochs", "1", "--max-frames", "8", "--workers", "1", "--lr", "2e-3",
            "--coef-lr", "1", "--warmup-fraction", "0.05", "--optimizer", "adamw", "--freeze-layer-num", "-1", "--seed", str(seed), "--log-every-steps", "1000"]  # fmt: skip


def evaluate(run: str, shards: str, topk: int) -> dict:
    out = os.path.join(run, f"eval_{os.path.basename(shards)}")
    with contextlib.redirect_stdout(io.StringIO()):
        if eval_main(["--checkpoint", run, "--shards", shards, "--out", out, "--post", "--rerank-topk", str(topk)]) != 0:
            raise RuntimeError(f"evaluation of {run} on {shards} failed")
    with open(os.path.join(out, "metrics.json")) as handle:
        return json.load(handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", default="bench_out/methods")
    parser.add_argument("--num-videos", type=int, default=96)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--topk", type=int, default=10, help="EERCF candidates kept by the coarse stage")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    shards = build_data(args.out, args.num_videos)
    base = os.path.join(args.out, "random_tiny_clip.pt")
    if not os.path.exists(base):
        torch.manual_seed(1234)
        torch.save(open_clip.create_model("tiny-ViT-112").state_dict(), base)
    table = os.path.join(args.out, "methods.json")
    rows = {}
    if os.path.exists(table):  # a later call for some methods keeps the others' rows
        with open(table) as handle:
            rows = json.load(handle)
    for name in args.methods:
        results = []
        for seed in args.seeds:
            content = content_clip(args, shards, seed) if "CONTENT" in METHODS[name] else None
            flags = [{"BASE": base, "CONTENT": content}.get(flag, flag) for flag in METHODS[name]]
            run = run_folder(args.out, name, seed)
            config = parse_config([*common_flags(args, shards, run, seed), *flags])
            with contextlib.redirect_stdout(io.StringIO()):
                train(config)
            fit, held_out = evaluate(run, shards["train"], args.topk), evaluate(run, shards["test"], args.topk)
            results.append({"fit": fit, "held_out": held_out})
        fit_t2v = [r["fit"]["raw"]["t2v"] for r in results]
        held_t2v = [r["held_out"]["raw"]["t2v"] for r in results]
        row = {
            "flags": " ".join("BASE.pt" if flag == base else "MEANP_CLIP.pt" if flag == content else flag for flag in flags),
            "seeds": len(results),
            "fit_R1": float(np.mean([m["R1"] for m in fit_t2v])),
            "fit_R5": float(np.mean([m["R5"] for m in fit_t2v])),
            "fit_MnR": float(np.mean([m["MnR"] for m in fit_t2v])),
            "held_out_R1": float(np.mean([m["R1"] for m in held_t2v])),
            "held_out_MnR": float(np.mean([m["MnR"] for m in held_t2v])),
            "fit_videos": results[0]["fit"]["num_videos"],
            "held_out_videos": results[0]["held_out"]["num_videos"],
        }
        if "coarse_to_fine" in results[0]["fit"]:
            stages = [r["fit"]["coarse_to_fine"] for r in results]
            row["fit_two_stage_R1"] = float(np.mean([s["two_stage"]["t2v"]["R1"] for s in stages]))
            row["fit_coarse_only_R1"] = float(np.mean([s["coarse_only"]["t2v"]["R1"] for s in stages]))
        rows[name] = row
        print(json.dumps({"method": name, **row}), flush=True)
    with open(table, "w") as handle:
        json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
