"""``python -m eval --checkpoint CKPT --shards URL [--out DIR]`` (also under torchrun).

Encodes the split once (shards spread over ranks), scores text->video and video->text in
blocks, and writes ``metrics.json`` (raw scores, plus dual/inverted softmax reported
separately), ``report.html`` and ``rank_histogram.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch.distributed as dist

from eval.encode import encode_split
from eval.metrics import summarize, t2v_ranks, v2t_ranks
from eval.postprocess import normalised_blocks
from eval.query_bank import query_bank
from eval.report import rank_histogram_png, render_report
from eval.rerank import compare_coarse_to_fine
from eval.scoring import SplitScorer, fine_blocks
from eval.summary_table import metrics_table
from eval.trained_model import CHOICES, describe_choice, load_trained_model
from model import backbone
from model.foreign_checkpoints import FORMATS
from model.frame_rule import frame_rule_for
from runtime.cli import HelpFormatter
from runtime.distributed import init_distributed
from runtime.logs import setup_logging
from shards.manifest import BuildStateError
from shards.probe import probe_location
from shards.reader import ReadPolicy, ShardReadError, shard_urls
from shards.storage import StorageError, Store


def run(args: argparse.Namespace) -> dict:
    logger = setup_logging(int(os.environ.get("RANK", "0")), "stderr" if args.json else "stdout")  # --json: stdout is the answer alone
    probe_location(args.shards, must_exist=True)
    probe_location(args.checkpoint, must_exist=True)
    if args.out:
        probe_location(args.out, must_exist=False)
    if args.qb_norm_bank:
        probe_location(args.qb_norm_bank, must_exist=True)
    info = init_distributed()
    if info.is_main:
        logger.info("checkpoint: %s", describe_choice(args.checkpoint, args.which))
    trained = load_trained_model(args.checkpoint, args.checkpoint_format, args.base_weights, args.max_frames, args.max_words, args.which)
    model, config, checkpoint = trained.model, trained.config, trained.checkpoint
    logger.info("evaluating %s (%s, step %s) on %s", checkpoint, config.sim_header, trained.step, args.shards)
    model.to(info.device)
    image_size = backbone.input_size(model.clip)
    rule = frame_rule_for(args.shards, config.max_frames, image_size)
    urls = shard_urls(args.shards)
    policy = ReadPolicy(retries=args.read_retries, timeout_s=args.read_timeout)
    split = encode_split(model, urls, backbone.tokenizer_for(config.model), info.device, config.max_frames, config.max_words, image_size,
                         args.batch_size, policy, rule)  # fmt: skip
    scorer = SplitScorer(model, split, info.device)
    text_block, video_block = fine_blocks(scorer)
    num_videos, caption_to_video = len(split.keys), split.caption_to_video
    ranks = {
        "t2v": t2v_ranks(text_block, caption_to_video, args.block_size),
        "v2t": v2t_ranks(video_block, caption_to_video, num_videos, args.block_size),
    }
    result = {
        "checkpoint": checkpoint if "://" in checkpoint else os.path.abspath(checkpoint),
        "step": trained.step,
        "model": {
            "name": config.model,
            "pretrained": config.pretrained,
            "sim_header": config.sim_header,
            "interaction": config.interaction,
            "emcl": config.emcl,
            "eercf": config.eercf,
            "peft": config.peft,
        },
        "settings": {
            "max_frames": config.max_frames,
            "max_words": config.max_words,
            "image_size": image_size,
            "tie_rule": "ground truth wins ties",
        },
        "shards": args.shards,
        "num_videos": num_videos,
        "num_captions": len(split.captions),
        "skipped": split.skipped,
        "raw": {name: summarize(values) for name, values in ranks.items()},
    }
    if model.similarity.has_fine_stage and args.rerank_topk > 0:
        result["coarse_to_fine"] = compare_coarse_to_fine(scorer, caption_to_video, args.rerank_topk, args.block_size)
    temperature = 1.0 / model.logit_scale().item() if model.similarity.uses_logit_scale else 1.0
    for method in args.post:
        t_block, v_block = normalised_blocks(text_block, video_block, len(split.captions), method, temperature, args.block_size)
        result[method] = {
            "t2v": summarize(t2v_ranks(t_block, caption_to_video, args.block_size)),
            "v2t": summarize(v2t_ranks(v_block, caption_to_video, num_videos, args.block_size)),
        }
    if args.qb_norm_bank:
        bank_split = encode_split(model, shard_urls(args.qb_norm_bank), backbone.tokenizer_for(config.model), info.device, config.max_frames,
                                  config.max_words, image_size, args.batch_size, policy, frame_rule_for(args.qb_norm_bank, config.max_frames,
                                                                                                         image_size))  # fmt: skip
        bank = query_bank(model, split, bank_split, info.device)
        result["qb_norm_bank"] = {"bank": args.qb_norm_bank, "captions": len(bank_split.captions), "videos": len(bank_split.keys)}
        for method in args.post:
            t_block, v_block = normalised_blocks(text_block, video_block, len(split.captions), method, temperature, args.block_size, bank)
            result["qb_norm_bank"][method] = {
                "t2v": summarize(t2v_ranks(t_block, caption_to_video, args.block_size)),
                "v2t": summarize(v2t_ranks(v_block, caption_to_video, num_videos, args.block_size)),
            }
    if info.is_main and args.out:
        out = Store(args.out)  # a folder or any fsspec URL
        out.write_bytes("metrics.json", json.dumps(result, indent=1).encode("utf-8"))
        histogram = rank_histogram_png(ranks)
        out.write_bytes("rank_histogram.png", histogram)
        title = f"{config.sim_header} @ step {trained.step} on {args.shards}"
        report = render_report(
            histogram,
            split,
            text_block,
            ranks["t2v"],
            urls,
            result["raw"],
            title,
            args.report_queries,
            args.seed,
        )
        out.write_bytes("report.html", report.encode("utf-8"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, or a run folder (uses checkpoints/latest, or --which best)")
    parser.add_argument("--which", default="latest", choices=CHOICES, help="a run folder's latest checkpoint, or the one --keep-best kept")
    parser.add_argument("--shards", required=True, help="test split: build folder / s3:// prefix with manifest, or brace pattern")
    parser.add_argument("--out", help="folder for metrics.json, report.html, rank_histogram.png")
    parser.add_argument("--batch-size", type=int, default=32, help="videos encoded per forward pass")
    parser.add_argument("--block-size", type=int, default=1024, help="query rows scored at a time (bounds memory)")
    parser.add_argument("--post", nargs="*", default=["dual_softmax", "inverted_softmax"], choices=["dual_softmax", "inverted_softmax"])
    parser.add_argument(
        "--rerank-topk",
        type=int,
        default=50,
        help="EERCF two-stage scoring for models with a fine similarity (--eercf, wti/ti, tightTransf, EMCL): "
        "coarse rank all, rescore the top k; reports accuracy and time next to fine-on-all (0: off)",
    )
    parser.add_argument(
        "--checkpoint-format",
        default="auto",
        choices=["auto", "project", *FORMATS],
        help="who wrote --checkpoint: this project, or CLIP4Clip / DRL / EMCL-Net / EERCF (their pytorch_model.bin.N); "
        "auto tells them apart where the keys can (CLIP4Clip's tightTransf, DRL's WTI) and asks otherwise",
    )
    parser.add_argument("--max-frames", type=int, help="frames per video (default: the checkpoint's; 12 for reference checkpoints)")
    parser.add_argument("--max-words", type=int, help="tokens per caption (default: the checkpoint's; 32 for reference checkpoints)")
    parser.add_argument("--base-weights", help="where the frozen base of a PEFT checkpoint is now, if it moved")
    parser.add_argument("--read-retries", type=int, default=ReadPolicy.retries, help="attempts after a failed shard read before the shard is skipped")
    parser.add_argument("--read-timeout", type=float, default=ReadPolicy.timeout_s, help="seconds before a stalled object-store read counts as failed")
    parser.add_argument("--qb-norm-bank", help="shards of another split (QB-Norm: the training split) whose captions and videos are the "
                        "query bank of --post's normalisations, reported beside the test-bank numbers")
    parser.add_argument("--report-queries", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0, help="which report queries are sampled")
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON document on stdout instead of the table, "
                                                            "everything else on stderr (for scripts)")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except (FileNotFoundError, RuntimeError, ShardReadError, BuildStateError, StorageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:  # the process group is gone by now; torchrun's RANK says who prints
        if args.json:
            print(json.dumps({k: result[k] for k in ("raw", *args.post, "coarse_to_fine", "qb_norm_bank") if k in result}))
        else:
            print(f"{result['model']['sim_header']} at step {result['step']} on {args.shards}: {result['num_videos']} videos, "
                  f"{result['num_captions']} captions")
            print(metrics_table(result))
            where = f"{args.out.rstrip('/')}/metrics.json (and report.html)" if args.out else "not written: add --out DIR for metrics.json"
            print(f"metrics: {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
