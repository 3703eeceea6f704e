"""Issue 25's GPU figures from one command: the trainer's own loop vs the synthetic ceiling,
eager and compiled, ``--decode-on worker|device``, batch 128 and 256; ``python -m eval``'s
encoding over shards vs its encode-only ceiling; each method's step cost relative to meanP.

Device time is short, so the sections run in priority order and every finished row is appended
to ``OUT/gpu_suite.jsonl`` at once: a run stopped at its time limit still returns what it measured.

- ceiling: ``train/step.py`` ``Trainer.step`` (the production step: the method's optimiser, BertAdam
  by default, once with fused AdamW for comparison; grad clip, logit-scale clamp, bf16 autocast) on
  one device-resident uint8 batch, in this process.
- loop: ``python -m train`` itself in a subprocess over real shards, its own ``metrics.jsonl``
  windows (``--log-every-steps`` steps each, timed between the loss reads that end them); the
  windows before ``--loop-warmup`` steps (worker start, compilation) are reported as warm-up.
- eval: ``eval/encode.py`` ``encode_split`` (what ``python -m eval`` runs) over the shard list
  repeated, vs ``encode_video`` + ``encode_text`` on device-resident tensors of the same shapes.
- methods: the ceiling step (eager) of each method, as a ratio to meanP's.
- precision: the ceiling step under ``--precision fp16`` (CLIP4Clip's fp16 weights) and ``amp-fp16``
  (DGL's fp16 autocast + GradScaler), next to the bf16 default.

    python3 -m bench.bench_gpu_suite --shards .benchdata/msrvtt --out $OUT [--workers 8]

``--device cpu --model tiny-ViT-112 --frames 4 --steps 2 --warmup 1 ...`` checks that every section runs
(no throughput figure).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from eval.encode import encode_split
from model import backbone
from model.factory import assemble_model
from runtime.cli import HelpFormatter
from shards.reader import shard_urls
from train.config import TrainConfig
from train.step import Trainer, compile_encoders

METHODS: dict[str, dict] = {
    "meanP": {"sim_header": "meanP"},
    "seqTransf": {"sim_header": "seqTransf"},
    "DRL WTI (seqTransf + wti)": {"sim_header": "seqTransf", "interaction": "wti"},
    "tightTransf": {"sim_header": "tightTransf"},
    "EMCL (seqTransf + emcl)": {"sim_header": "seqTransf", "emcl": True},
    "EERCF (seqTransf + eercf)": {"sim_header": "seqTransf", "eercf": True},
    "dual-attention PEFT (frozen CLIP)": {"sim_header": "meanP", "peft": "dual", "pretrained": "frozen-random-init"},
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def timed(run_once: Callable[[], None], steps: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """(warm-up seconds, seconds for ``steps`` steps after it), synchronised at both ends."""
    start = time.perf_counter()
    for _ in range(warmup):
        run_once()
    synchronize(device)
    warm = time.perf_counter()
    for _ in range(steps):
        run_once()
    synchronize(device)
    return warm - start, time.perf_counter() - warm


def synthetic_batch(batch_size: int, frames: int, image_size: int, tokenize, device: torch.device) -> dict:
    return {
        "frames": torch.randint(0, 256, (batch_size, frames, 3, image_size, image_size), dtype=torch.uint8, device=device),
        "mask": torch.ones(batch_size, frames, dtype=torch.bool, device=device),
        "tokens": tokenize(["a red circle moves from left to right"] * batch_size, context_length=32).to(device),
    }


def build(args, device: torch.device, **overrides) -> tuple[torch.nn.Module, TrainConfig]:
    options = {"sim_header": "meanP", "batch_size": 128, **overrides}
    config = TrainConfig(train_shards=args.shards, output_dir="", model=args.model, max_frames=args.frames, workers=args.workers, **options)
    clip = backbone.load_clip(args.model, None)  # random init: throughput does not depend on the weights
    return assemble_model(clip, config).to(device), config


def ceiling(args, device: torch.device, batch_size: int, compiled: bool, mode: str | None = None, steps: int | None = None,
            warmup: int | None = None, **method) -> dict:  # fmt: skip
    """The production step on one device-resident batch."""
    steps, warmup = steps or args.steps, warmup or args.warmup
    free_memory(device)
    micro = batch_size // method.get("accum_freq", 1)  # --batch-size is the global micro-batch; the step takes accum_freq of them
    model, config = build(args, device, batch_size=micro, **method)
    if compiled:
        compile_encoders(model, mode=mode)
    trainer = Trainer(model, config, device, total_steps=10 * (steps + warmup))
    batch = synthetic_batch(batch_size, args.frames, backbone.input_size(model.clip), backbone.tokenizer_for(args.model), device)
    warm_s, seconds = timed(lambda: trainer.step(batch), steps, warmup, device)
    row = {"clips_per_s": round(steps * batch_size / seconds, 1), "warmup_s": round(warm_s, 1), "peak_gib": peak_gib(device),
           "optimizer": type(trainer.optimizer).__name__}  # fmt: skip
    return row  # its model and optimiser are freed by the caller's free_memory once this frame is gone


def loop(args, batch_size: int, compiled: bool, decode_on: str, sync_every: int) -> dict:
    """``python -m train`` itself; clips/s from its own logged windows after the warm-up steps."""
    steps, every = args.loop_steps, args.log_every
    with tempfile.TemporaryDirectory() as run_dir:
        command = [sys.executable, "-m", "train", "--train-shards", args.shards, "--output-dir", run_dir, "--model", args.model,
                   "--batch-size", str(batch_size), "--max-frames", str(args.frames), "--workers", str(args.workers),
                   "--decode-on", decode_on, "--epochs", "1", "--steps-per-epoch", str(steps), "--log-every-steps", str(every),
                   "--sync-every-steps", str(sync_every), "--checkpoint-every-steps", str(10 * steps), "--seed", "0",
                   *(["--compile"] if compiled else [])]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall = time.perf_counter() - start
        if done.returncode != 0:
            return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
        records = [json.loads(line) for line in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if r["kind"] == "train"]
    warm = [w for w in windows if w["step"] <= args.loop_warmup]
    steady = [w for w in windows if w["step"] > args.loop_warmup]
    steady_seconds = sum(every * batch_size / w["clips_per_s"] for w in steady)
    return {
        "clips_per_s": round(len(steady) * every * batch_size / steady_seconds, 1),
        "warmup_s": round(sum(every * batch_size / w["clips_per_s"] for w in warm), 1),
        "steady_steps": len(steady) * every,
        "peak_gib": max((w.get("max_memory_gib") or 0) for w in windows) or None,
        "process_wall_s": round(wall, 1),
    }


def eval_encode(args, device: torch.device) -> dict:
    """``encode_split`` over the shards (repeated) vs the same encoders on device-resident tensors."""
    free_memory(device)
    model, _ = build(args, device)
    tokenize = backbone.tokenizer_for(args.model)
    image_size = backbone.input_size(model.clip)
    urls = list(shard_urls(args.shards))
    probe = encode_split(model, urls, tokenize, device, args.frames, 32, image_size, args.eval_batch)
    videos, captions = len(probe.keys), len(probe.captions)
    repeated = urls * args.eval_repeats
    synchronize(device)
    start = time.perf_counter()
    encode_split(model, repeated, tokenize, device, args.frames, 32, image_size, args.eval_batch)
    synchronize(device)
    streamed = videos * args.eval_repeats / (time.perf_counter() - start)
    per_video = max(1, round(captions / videos))
    batch = synthetic_batch(args.eval_batch, args.frames, image_size, tokenize, device)
    text = batch["tokens"].repeat(per_video, 1)

    def encode_once() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model.encode_video(batch["frames"], batch["mask"])
            model.encode_text(text)

    model.eval()
    _, seconds = timed(encode_once, args.steps, args.warmup, device)
    ceiling_rate = args.steps * args.eval_batch / seconds
    return {"videos_per_s": round(streamed, 1), "ceiling_videos_per_s": round(ceiling_rate, 1), "ratio": round(streamed / ceiling_rate, 3),
            "videos_encoded": videos * args.eval_repeats, "captions_per_video": per_video, "batch": args.eval_batch}  # fmt: skip


def method_costs(args, device: torch.device) -> Iterator[tuple[str, dict]]:
    base = None
    for name, method in METHODS.items():
        row = ceiling(args, device, 128, False, steps=args.method_steps, warmup=5, **method)
        free_memory(device)
        base = base or row["clips_per_s"]
        row["step_cost_vs_meanP"] = round(base / row["clips_per_s"], 2)
        yield name, row


def sections(args, device: torch.device) -> Iterator[tuple[str, Callable[[], object]]]:
    """Priority order: what the issue asks first comes first, so a stopped run keeps it."""
    yield "ceiling eager b128", lambda: ceiling(args, device, 128, False)
    yield "ceiling eager b128 --optimizer adamw (fused)", lambda: ceiling(args, device, 128, False, optimizer="adamw")
    # issue 34: the seeds' own precisions next to bf16 (the row above): CLIP4Clip's fp16 weights, DGL's fp16 AMP
    yield "ceiling eager b128 --precision fp16", lambda: ceiling(args, device, 128, False, precision="fp16")
    yield "ceiling eager b128 --precision amp-fp16", lambda: ceiling(args, device, 128, False, precision="amp-fp16")
    # issue 35: the same global batch of 128 as 4 micro-batches of 32 (--accum-freq 4): time and peak memory vs the row above
    yield "ceiling eager b128 as 4 x 32 (--accum-freq 4)", lambda: ceiling(args, device, 128, False, accum_freq=4)
    yield "loop eager worker b128 sync1", lambda: loop(args, 128, False, "worker", 1)
    yield "ceiling compiled b128", lambda: ceiling(args, device, 128, True)
    yield "loop compiled worker b128 sync20", lambda: loop(args, 128, True, "worker", 20)
    yield "methods", lambda: method_costs(args, device)
    yield "eval encode", lambda: eval_encode(args, device)
    yield "loop compiled device b128 sync20", lambda: loop(args, 128, True, "device", 20)
    yield "ceiling compiled b256", lambda: ceiling(args, device, 256, True)
    yield "loop compiled worker b256 sync20", lambda: loop(args, 256, True, "worker", 20)
    yield "loop eager worker b128 sync20", lambda: loop(args, 128, False, "worker", 20)
    yield "loop compiled worker b128 sync1", lambda: loop(args, 128, True, "worker", 1)
    yield "ceiling compiled b128 max-autotune-no-cudagraphs", lambda: ceiling(args, device, 128, True, mode="max-autotune-no-cudagraphs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--shards", required=True)
    parser.add_argument("--out", required=True, help="folder for gpu_suite.jsonl (one JSON line per finished row)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="timed ceiling steps, after --warmup")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--method-steps", type=int, default=15, help="timed steps of each method's ceiling, after 5")
    parser.add_argument("--loop-steps", type=int, default=90, help="steps of each python -m train run")
    parser.add_argument("--loop-warmup", type=int, default=30, help="its first steps, reported as warm-up")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--eval-batch", type=int, default=32)
    parser.add_argument("--eval-repeats", type=int, default=10, help="times the shard list is encoded")
    parser.add_argument("--only", nargs="*", help="run just the sections whose names start with these")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = out / "gpu_suite.jsonl"

    def write(name: str, value: dict) -> None:
        line = json.dumps({"section": name, **value})
        print(line, flush=True)
        with rows.open("a") as handle:
            handle.write(line + "\n")

    write("machine", {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke run, not a throughput figure)",
                      "torch": torch.__version__, "cpu_count": os.cpu_count(), "model": args.model, "frames": args.frames,
                      "workers": args.workers})  # fmt: skip
    for name, run in sections(args, device):
        if args.only and not any(name.startswith(prefix) for prefix in args.only):
            continue
        start = time.perf_counter()
        try:
            result = run()
            if isinstance(result, dict):
                write(name, {**result, "section_s": round(time.perf_counter() - start, 1)})
            else:
                for method, row in result:
                    write(f"{name}: {method}", row)
        except Exception as error:  # noqa: BLE001 - one broken row must not cost the rows after it on a short lease
            write(name, {"error": f"{type(error).__name__}: {error}"[-1500:]})
        free_memory(device)


if __name__ == "__main__":
    main()
