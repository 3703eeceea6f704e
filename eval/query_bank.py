"""The query bank of ``--qb-norm-bank``: another split's captions and videos scored against the test split
with the model's own similarity (the same fine scores as the evaluator's raw ranking), as
``eval/postprocess.py`` reads them."""

from __future__ import annotations

from dataclasses import replace

import torch

from eval.encode import EncodedSplit
from eval.postprocess import QueryBank
from eval.scoring import SplitScorer
from model.clip4clip import CLIP4Clip


def _crossed(texts_of: EncodedSplit, videos_of: EncodedSplit) -> EncodedSplit:
    """One split's captions with another split's videos (``caption_to_video`` is never read here)."""
    return replace(videos_of, captions=texts_of.captions, caption_to_video=torch.zeros(len(texts_of.captions), dtype=torch.long),
                   text=texts_of.text, text_tokens=texts_of.text_tokens, text_mask=texts_of.text_mask)  # fmt: skip


def query_bank(model: CLIP4Clip, test: EncodedSplit, bank: EncodedSplit, device: torch.device) -> QueryBank:
    bank_captions = SplitScorer(model, _crossed(bank, test), device)
    bank_videos = SplitScorer(model, _crossed(test, bank), device)
    every_test_video, every_bank_video = slice(0, len(test.keys)), slice(0, len(bank.keys))
    return QueryBank(
        captions_x_test_videos=lambda a, b: bank_captions.fine(slice(a, b), every_test_video),
        num_captions=len(bank.captions),
        test_captions_x_videos=lambda a, b: bank_videos.fine(slice(a, b), every_bank_video),
    )
