"""X-Pool and T-MASS tokenise with Hugging Face's CLIPTokenizer, padded to the batch's longest caption;
this project with open_clip's, to --max-words. Built from the same BPE (open_clip's file, written out in
Hugging Face's vocab.json / merges.txt form), the two give the same ids on every real position of a
caption shorter than --max-words, so the end-token feature either model reads is the same (docs/methods.md)."""

from __future__ import annotations

import json

import torch
from open_clip.tokenizer import SimpleTokenizer, tokenize
from transformers import CLIPTokenizer

CAPTIONS = ["a red circle moves from left to right", "A man is singing a song on stage!", "two dogs, playing in the snow...",
            "someone's cooking pasta in a kitchen", "cars drive on a highway at night"]  # fmt: skip


def hugging_face_tokenizer(folder) -> CLIPTokenizer:
    ours = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # the two libraries' names
    vocab = {special.get(token, token): index for token, index in ours.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(ours.bpe_ranks, key=ours.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))


def test_short_captions_get_the_same_ids_and_the_same_end_token(tmp_path):
    theirs = hugging_face_tokenizer(tmp_path)(CAPTIONS, padding=True, return_tensors="pt")
    ours = tokenize(CAPTIONS, context_length=32)
    real = theirs["attention_mask"].bool()
    assert torch.equal(theirs["input_ids"][real], ours[:, : real.shape[1]][real])
    assert torch.equal(theirs["input_ids"].masked_fill(~real, 0).argmax(-1), ours.argmax(-1))  # where the end token's feature is read
