"""The search's query encoder (search/query_encoder.py): trimmed padding gives the full-context vector,
the int8 view leaves the model alone and stays close, and ``auto`` picks int8 only where it ranks the
index's own captions as fp32 does."""

from __future__ import annotations

import contextlib

import pytest
import torch

from model import backbone
from model.clip4clip import CLIP4Clip
from model.trained_model import model_fingerprint
from search.query_encoder import QueryEncoder, trimmed, trims_padding
from tests.models import clip4clip

TEXTS = ["a red circle moves from left to right", "a dog", "two people are talking about a car in a kitchen at night while it rains"]


def _model(head: str = "meanP", interaction: str = "cosine") -> CLIP4Clip:
    torch.manual_seed(0)
    return clip4clip(backbone.load_clip("tiny-ViT", None), head, max_frames=4, interaction=interaction).eval()


def _tokens(texts: list[str]) -> torch.Tensor:
    return backbone.tokenizer_for(None)(texts, context_length=32)


def test_trimmed_padding_gives_the_full_context_vector():
    model = _model()
    tokens = _tokens(TEXTS)
    assert trims_padding(model) and trimmed(tokens).shape[1] == int(tokens.argmax(-1).max()) + 1 < 32
    with torch.no_grad():
        full = backbone.encode_text(model.clip, tokens).pooled  # every one of the 32 positions, as the evaluator encodes
        fast = QueryEncoder(model, "fp32")(tokens, contextlib.nullcontext).pooled
        alone = torch.cat([QueryEncoder(model, "fp32")(_tokens([t]), contextlib.nullcontext).pooled for t in TEXTS])
    full = torch.nn.functional.normalize(full, dim=-1)  # meanP's similarity normalises the text vector
    assert torch.allclose(fast, full, atol=1e-5) and torch.allclose(alone, full, atol=1e-5)


def test_models_that_read_text_tokens_are_not_trimmed():
    assert not trims_padding(_model("meanP", "wti"))  # WTI reads every token's feature
    model = _model()
    model.clip.attn_mask = None  # a text tower without the causal mask: later positions reach the end token
    assert not trims_padding(model)


def test_the_int8_view_quantizes_a_copy_and_stays_close():
    model = _model()
    before = model_fingerprint(model)
    encoder = QueryEncoder(model, "int8")
    assert model_fingerprint(model) == before and encoder.model.clip.visual is model.clip.visual
    assert type(encoder.model.clip.transformer.resblocks[0].mlp.c_fc).__module__ == "torch.ao.nn.quantized.dynamic.modules.linear"
    assert type(model.clip.transformer.resblocks[0].mlp.c_fc) is torch.nn.Linear
    tokens = _tokens(TEXTS)
    with torch.no_grad():
        exact = QueryEncoder(model, "fp32")(tokens, contextlib.nullcontext).pooled
        fast = encoder(tokens, contextlib.nullcontext).pooled
    cosine = torch.nn.functional.cosine_similarity(exact, fast, dim=1)
    assert not torch.equal(exact, fast) and bool((cosine > 0.98).all()), cosine
    with pytest.raises(ValueError, match="fp32 or int8"):
        QueryEncoder(model, "int4")


def test_auto_uses_int8_only_where_it_keeps_the_indexs_ranking(search_collection, monkeypatch):
    import search.searcher as searcher_module
    from search.searcher import open_searcher

    index = str(search_collection / "index")
    checked = open_searcher(index, query_encoder="auto")  # 8 videos, 24 distinct captions
    check = checked.encoder_check
    kept = check["min_cosine"] >= 0.99 and check["same_top10"] >= 0.95
    assert checked.encoder.kind == ("int8" if kept else "fp32") and check["captions"] == 24
    monkeypatch.setattr(searcher_module, "MIN_CHECK_CAPTIONS", 25)
    few = open_searcher(index, query_encoder="auto")
    assert few.encoder.kind == "fp32" and "24 captions, too few to check" in few.encoder_check["why"]
    monkeypatch.setattr(searcher_module, "MIN_CHECK_CAPTIONS", 4)
    monkeypatch.setattr(searcher_module, "MIN_SAME_TOP10", 1.01)  # a bar int8 cannot pass
    refused = open_searcher(index, query_encoder="auto")
    assert refused.encoder.kind == "fp32" and "changed the ranking" in refused.encoder_check["why"]
    forced = open_searcher(index, query_encoder="int8")
    assert forced.encoder.kind == "int8" and forced.search("a red circle", 3).hits
