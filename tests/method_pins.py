"""Numbers from tiny runs of every method, pinned before the code that computes them moves.

For each method: the loss and its parts over three training steps (the real ``Trainer.step``
with the method's optimiser and schedule), the evaluator's metrics and a digest of its score
matrix on a small encoded split, the coarse (search) scores, and the checkpoint's keys and
shapes (so a checkpoint written before a move still loads). ``tests/method_pins.json`` holds the
numbers computed by the code as it was; ``tests/test_method_pins.py`` recomputes them.

    python -m tests.method_pins --write   # only when a change of numbers is intended
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import torch

PINS_FILE = Path(__file__).with_name("method_pins.json")
SOT, EOT = 49406, 49407
MAX_FRAMES = 4
# tiny-ViT-112 has 2 image layers: TempMe's, DGL's and the seed's layer flags are scaled to them
TEMPME_FLAGS = ["--merge-layers", "0-1", "--merge-frames", "2-2", "--tome-r", "1"]
METHOD_RUNS: dict[str, list[str]] = {
    "meanP": [],
    "seqLSTM": ["--sim-header", "seqLSTM"],
    "seqTransf": ["--sim-header", "seqTransf"],
    "tightTransf": ["--sim-header", "tightTransf"],
    "drl-dp-cdcr": ["--cdcr", "1", "--cdcr-weight", "0.5"],
    "drl-wti-cdcr": ["--sim-header", "seqTransf", "--interaction", "wti", "--cdcr", "3", "--cdcr-weight", "0.5"],
    "drl-ti-cdcr-reference": ["--interaction", "ti", "--cdcr", "2", "--cdcr-weight", "0.5", "--padding-rule", "reference"],
    "drl-wti-coarse": ["--interaction", "wti", "--coarse-weight", "1.0"],
    "emcl": ["--sim-header", "seqTransf", "--emcl", "--emcl-bases", "4", "--emcl-iterations", "3"],
    "emcl-reference": ["--sim-header", "seqTransf", "--emcl", "--emcl-bases", "4", "--padding-rule", "reference"],
    "eercf": ["--sim-header", "seqTransf", "--eercf", "--eercf-strongpatch-weight", "0.3", "--eercf-cdcl-patch-weight", "0.5"],
    "peft-prompts": ["--peft", "prompts", "--prompt-tokens", "2"],
    "peft-lora": ["--peft", "lora", "--lora-rank", "2"],
    "peft-prompts+lora": ["--peft", "prompts+lora", "--prompt-tokens", "2", "--lora-rank", "2"],
    "tempme": ["--peft", "tempme", "--lora-rank", "2", *TEMPME_FLAGS],
    "dgl": [
        "--peft",
        "dgl",
        "--dgl-prompt-layers",
        "2",
        "--dgl-frame-prompts",
        "2",
        "--dgl-global-prompts",
        "2",
        "--dgl-text-prompts",
        "4",
    ],
    "dgl-linear": ["--peft", "dgl", "--dgl-latent", "linear", "--dgl-prompt-layers", "1"],
    "dual": [
        "--peft",
        "dual",
        "--lora-rank",
        "2",
        "--tome-r",
        "1",
        "--frame-per-seg",
        "2-4",
        "--seg-num",
        "2-1",
        "--seg-layer",
        "0-1",
        "--sel-layer",
        "0",
        "--dgl-global-prompts",
        "2",
    ],  # fmt: skip
}


def captions(count: int, seed: int, length: int = 12) -> torch.Tensor:
    """Token ids of captions of different lengths (SOT ... EOT, then padding)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, 40000, (count, length), generator=generator)
    tokens[:, 0] = SOT
    for row in range(count):
        end = 3 + (row * 5) % (length - 3)
        tokens[row, end] = EOT
        tokens[row, end + 1 :] = 0
    return tokens


def clips(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 frames and their mask; every other clip is shorter than MAX_FRAMES (padding takes part)."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (count, MAX_FRAMES, 3, 112, 112), generator=generator, dtype=torch.uint8)
    mask = torch.ones(count, MAX_FRAMES, dtype=torch.bool)
    mask[::2, MAX_FRAMES // 2 :] = False
    frames[~mask] = 0
    return frames, mask


def _round(value: float) -> float:
    return float(f"{value:.7g}")


def digest(tensor: torch.Tensor) -> list[float]:
    """A few numbers that change when any entry does: sum, sum of squares, a weighted sum."""
    flat = tensor.detach().double().flatten()
    weights = torch.linspace(-1.0, 1.0, flat.numel(), dtype=torch.float64)
    return [_round(flat.sum().item()), _round((flat * flat).sum().item()), _round((flat * weights).sum().item())]


def method_numbers(name: str, workdir: Path) -> dict:
    """The pinned numbers of one method's tiny run (deterministic on CPU)."""
    from eval.encode import EncodedSplit
    from eval.metrics import summarize, t2v_ranks, v2t_ranks
    from eval.scoring import SplitScorer, fine_blocks
    from model import backbone
    from model.factory import assemble_model
    from train.config import parse_config
    from train.step import Trainer

    torch.manual_seed(0)
    base = workdir / "base.pt"
    if not base.exists():
        torch.save(backbone.load_clip("tiny-ViT-112", None).state_dict(), base)
    flags = METHOD_RUNS[name]
    pretrained = ["--pretrained", str(base)] if "--peft" in flags else []
    config = parse_config(["--train-shards", "unused", "--output-dir", str(workdir / "run"), "--model", "tiny-ViT-112", "--max-frames",
                           str(MAX_FRAMES), "--max-words", "12", "--batch-size", "4", "--lr", "1e-3", "--coef-lr", "1", *pretrained, *flags])  # fmt: skip
    torch.manual_seed(1)
    model = assemble_model(backbone.load_clip(config.model, config.pretrained, config.activation), config)
    trainer = Trainer(model, config, torch.device("cpu"), total_steps=10)
    losses = []
    for step in range(3):
        frames, mask = clips(4, seed=10 + step)
        loss, parts = trainer.step({"tokens": captions(4, seed=20 + step), "frames": frames, "mask": mask})
        losses.append({"loss": _round(loss.item()), **{part: _round(float(value)) for part, value in sorted(parts.items())}})
    model.eval()
    frames, mask = clips(6, seed=30)
    tokens = captions(12, seed=31)
    with torch.no_grad():
        video = model.encode_video(frames, mask)
        text = model.encode_text(tokens)
    split = EncodedSplit(keys=[f"v{i}" for i in range(6)], captions=[f"c{i}" for i in range(12)],
                         caption_to_video=torch.arange(6).repeat_interleave(2), text=text.pooled.float(),
                         text_tokens=None if text.tokens is None else text.tokens.float(), text_mask=text.mask,
                         video_pooled=None if video.pooled is None else video.pooled.float(), video_frames=video.frames.float(),
                         video_mask=mask, skipped={}, video_clip_frames=video.clip_frames,
                         video_patches=None if video.patches is None else video.patches.half())  # fmt: skip
    scorer = SplitScorer(model, split, torch.device("cpu"))
    text_block, video_block = fine_blocks(scorer)
    fine = text_block(0, 12)
    t2v, v2t = t2v_ranks(text_block, split.caption_to_video), v2t_ranks(video_block, split.caption_to_video, 6)
    with torch.no_grad():
        coarse = model.coarse_similarity(text.pooled, video)
    state = model.state_dict()
    layout = "\n".join(f"{key}:{tuple(value.shape)}:{value.dtype}" for key, value in sorted(state.items()))
    return {
        "losses": losses,
        "t2v": {k: _round(v) for k, v in summarize(t2v).items()},
        "v2t": {k: _round(v) for k, v in summarize(v2t).items()},
        "fine_scores": digest(fine),
        "coarse_scores": digest(coarse),
        "checkpoint_layout": hashlib.sha256(layout.encode()).hexdigest(),
        "weights": digest(torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])),
    }


def config_fields() -> dict:
    """Every training option's name, type, default and choices: the flags, recipes and stored configs."""
    from dataclasses import MISSING, fields

    from train.config import TrainConfig

    return {f.name: [str(f.type), None if f.default is MISSING else f.default, list(f.metadata.get("choices") or ())]
            for f in sorted(fields(TrainConfig), key=lambda f: f.name)}  # fmt: skip


def all_numbers() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        numbers = {name: method_numbers(name, Path(tmp)) for name in METHOD_RUNS}
    numbers["_config_fields"] = config_fields()
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {PINS_FILE.name} (else print)")
    args = parser.parse_args()
    numbers = all_numbers()
    text = json.dumps(numbers, indent=1, sort_keys=True) + "\n"
    if args.write:
        PINS_FILE.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
