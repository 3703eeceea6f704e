"""The evaluation behind ``python -m eval``: encode the split, score it both ways, write the results.

Apart from eval/__main__.py (which only parses the options) so that ``--help`` and an argument
error answer without importing torch.
"""

from __future__ import annotations

import argparse
import json
import os

from eval.encode import encode_split
from eval.metrics import summarize, t2v_ranks, v2t_ranks
from eval.postprocess import normalised_blocks
from eval.query_bank import query_bank
from eval.report import rank_histogram_png, render_report
from eval.rerank import compare_coarse_to_fine
from eval.scoring import SplitScorer, fine_blocks
from model import backbone
from model.frame_rule import frame_rule_for
from model.trained_model import describe_choice, load_trained_model
from runtime.distributed import init_distributed
from runtime.logs import setup_logging
from shards.probe import probe_location
from shards.reader import ReadPolicy, shard_urls
from shards.storage import Store


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
            **config.architecture(),
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
