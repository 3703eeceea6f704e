"""Text -> the best videos of an index: the query encoded once, then EERCF's two stages.

Stage one scores every video by the coarse score, the caption vector against the stored
text-agnostic video vector: an exact scan (one matrix-vector product over the vectors held in
memory as float32) or, when the index has one and the mode allows, faiss's approximate index
(search/ann.py). Stage two, for models whose similarity has a fine stage (token interaction,
EMCL-Net, the tightTransf cross encoder, EERCF), rescores the top ``rerank_topk`` with the
model's own similarity on the stored per-frame features of just those rows, through the very
``pair_scorer`` the evaluator uses, and orders them by that score above the rest, which keep
their coarse order: the ranking of eval/rerank.py's ``two_stage_blocks``.

The index records the fingerprint of the model that made its vectors; a searcher with other
weights is refused (its query vectors would not live in the same space).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from model import backbone
from model.features import TextFeatures, VideoFeatures
from model.trained_model import TrainedModel, inference_autocast, load_trained_model, model_fingerprint
from search.ann import LEGACY_NPROBE, ApproximateSearch
from search.index_format import ANN_FILE, IndexFormatError, VideoIndex
from search.moments import CANDIDATES_PER_RESULT, Hit, group_hits, group_key
from search.options import DEFAULT_RERANK_TOPK, QUERY_ENCODERS, SEARCH_MODES
from search.query import check_query
from search.query_encoder import CHECK_CAPTIONS, MIN_CHECK_CAPTIONS, MIN_COSINE, MIN_SAME_TOP10, QueryEncoder


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    method: str  # "exact" or "approximate" first stage
    reranked: int  # how many candidates the fine stage rescored
    milliseconds: dict[str, float] = field(default_factory=dict)  # encode, coarse, fine, total
    batch_size: int = 1  # queries encoded together with this one (concurrent requests to the service)
    note: str | None = None  # how a query that is not text was scored


REAL_KINDS = "fiu"  # numpy dtype kinds a query vector may hold: float, int, unsigned int (not bool, complex, str, object)


class VectorQueryError(ValueError):
    """A query vector that cannot be searched with: the reason, for a 400 or the command's error."""


VIDEO_QUERY_NOTE = "a video or vector query is scored with the index's coarse video vectors (cosine)"
FINE_STAGE_UNUSED = ("; this index's fine similarity (tightTransf's cross encoder, WTI, EMCL, EERCF's fine stage) needs a caption "
                     "and is not used")  # fmt: skip


class Searcher:
    def __init__(self, index: VideoIndex, trained: TrainedModel, device: torch.device | None = None, mode: str = "auto",
                 rerank_topk: int = DEFAULT_RERANK_TOPK, nprobe: int | None = None, group: bool = True,
                 query_encoder: str = "fp32") -> None:  # fmt: skip
        if mode not in SEARCH_MODES:
            raise ValueError(f"search mode {mode!r}: one of {SEARCH_MODES}")
        self.index, self.device = index, device or torch.device("cpu")
        self.model, self.trained = trained.model.to(self.device).eval(), trained
        self.fingerprint = fingerprint = model_fingerprint(self.model)
        if fingerprint != index.manifest["model_sha256"]:
            raise IndexFormatError(
                f"{index.url}: made with the model {index.manifest['model_sha256'][:12]}... (checkpoint {index.manifest['checkpoint']}); "
                f"{trained.checkpoint} holds {fingerprint[:12]}...: search with the checkpoint the index was made with"
            )
        self.tokenize = backbone.tokenizer_for(trained.config.model)
        self.max_words = trained.config.max_words
        similarity = self.model.similarity
        self.has_fine_stage = similarity.has_fine_stage
        self.rerank_topk = rerank_topk if similarity.has_fine_stage else 0
        self.fine_arrays = [a for a in index.manifest["arrays"] if a != "video"]
        ann = index.manifest.get("ann")
        usable_ann = bool(ann) and ann["rows"] == len(index) and index.store.exists(ANN_FILE)
        if mode == "approximate" and not usable_ann:
            raise IndexFormatError(f"{index.url}: no approximate index for its {len(index)} rows (make one: python -m search.index ... --ann always)")
        nprobe = nprobe or (ann or {}).get("nprobe", LEGACY_NPROBE)  # what the index was built for, unless asked otherwise
        self.ann = ApproximateSearch(index.store.read_bytes(ANN_FILE), nprobe) if usable_ann and mode != "exact" else None
        # the exact scan holds the vectors as float32 (2 KB a video at 512 dims); ANN holds its own copy
        self.vectors = None if self.ann is not None else torch.from_numpy(index.video_vectors()).to(self.device)
        # an index of windows (or annotated segments) answers one hit per source video (search/moments.py)
        self.grouped = group and index.manifest.get("segment_rows", 0) > 0
        self.encoder, self.encoder_check = self._choose_query_encoder(query_encoder)

    def _choose_query_encoder(self, wanted: str) -> tuple[QueryEncoder, dict]:
        """fp32, int8, or (auto) int8 where it ranks this index's own captions as fp32 does (search/query_encoder.py)."""
        if wanted not in QUERY_ENCODERS:
            raise ValueError(f"query encoder {wanted!r}: one of {QUERY_ENCODERS}")
        exact = QueryEncoder(self.model, "fp32")
        on_cpu_fp32 = self.device.type == "cpu" and next(self.model.clip.transformer.parameters()).dtype == torch.float32
        if wanted == "fp32" or (wanted == "auto" and not on_cpu_fp32):
            return exact, {"encoder": "fp32", "why": "asked for" if wanted == "fp32" else "int8 kernels are for a CPU with fp32 weights"}
        if not on_cpu_fp32:
            raise ValueError("--query-encoder int8 needs a CPU and a model with fp32 weights (not --precision fp16)")
        fast = QueryEncoder(self.model, "int8")
        if wanted == "int8":
            return fast, {"encoder": "int8", "why": "asked for"}
        captions = self._own_captions(CHECK_CAPTIONS)
        if len(captions) < MIN_CHECK_CAPTIONS:
            return exact, {"encoder": "fp32", "why": f"the index holds {len(captions)} captions, too few to check int8 on (needs {MIN_CHECK_CAPTIONS})"}
        vectors = {}
        for name, encoder in (("fp32", exact), ("int8", fast)):
            parts = [self.model.coarse_text_vector(self._encode(captions[i : i + 32], encoder).pooled).float() for i in range(0, len(captions), 32)]
            vectors[name] = torch.cat(parts)
        check = agreement_in_index(vectors["fp32"], vectors["int8"], lambda v: self._coarse(v, min(10, len(self.index))))
        kept = check["min_cosine"] >= MIN_COSINE and check["same_top10"] >= MIN_SAME_TOP10
        check.update(encoder="int8" if kept else "fp32", why="int8 ranks this index's captions as fp32 does" if kept else
                     f"int8 changed the ranking here (needs cosine >= {MIN_COSINE}, identical top 10 for >= {MIN_SAME_TOP10:.0%})")  # fmt: skip
        return (fast if kept else exact), check

    def _own_captions(self, count: int) -> list[str]:
        """Up to ``count`` distinct captions of the index's rows, spread over the index."""
        captions: list[str] = []
        step = max(1, len(self.index) // count)
        for row in range(0, len(self.index), step):
            captions += [c for c in self.index.record(row)["captions"] if c not in captions]
            if len(captions) >= count:
                break
        return captions[:count]

    def row_of(self, key: str) -> int:
        """An indexed entry's row (LookupError naming the key when there is none)."""
        if not hasattr(self, "_rows_by_key"):
            self._rows_by_key = {k: row for row, k in enumerate(self.index.keys())}
        if key not in self._rows_by_key:
            raise LookupError(f"no indexed video has the key {key[:200]!r}")
        return self._rows_by_key[key]

    @torch.no_grad()
    def search_vector(self, vector: object, k: int = 10, label: str = "vector", exclude_row: int | None = None) -> SearchResult:
        """The top ``k`` by cosine with a vector in the index's coarse space (VIDEO_QUERY_NOTE says why coarse only)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        start = time.perf_counter()
        query = torch.from_numpy(check_vector(vector, self.index.manifest["dim"])).to(self.device)
        query = torch.nn.functional.normalize(query, dim=0)[None]
        rows, scores = self._coarse(query, self._depth(k + (exclude_row is not None)))[0]
        excluded = None if exclude_row is None else (group_key(self.index.record(exclude_row)) if self.grouped else exclude_row)
        hits = self._ranked_hits(query, rows, scores, ["coarse"] * len(rows), k, excluded)
        milliseconds = {"encode": 0.0, "coarse": 1e3 * (time.perf_counter() - start), "fine": 0.0, "total": 1e3 * (time.perf_counter() - start)}
        note = VIDEO_QUERY_NOTE + (FINE_STAGE_UNUSED if self.has_fine_stage else "")  # a meanP index has no fine stage to leave out
        return SearchResult(label, hits, self.method, 0, milliseconds, 1, note)

    def search_like(self, key: str, k: int = 10) -> SearchResult:
        """More like an indexed entry: its coarse video vector as the query, the entry itself left out."""
        row = self.row_of(key)
        return self.search_vector(self.index.take("video", np.array([row]))[0], k, f"like {key}", exclude_row=row)

    def _depth(self, k: int) -> int:
        """First-stage candidates for ``k`` results: more when results are grouped by source video."""
        return min(len(self.index), k * (CANDIDATES_PER_RESULT if self.grouped else 1))

    def _ranked_hits(self, vector: torch.Tensor, rows: np.ndarray, scores: np.ndarray, stages: list[str], k: int,
                     excluded: int | str | None = None) -> list[Hit]:  # fmt: skip
        """The top ``k`` hits of ranked candidates, one per source video when grouped (the first stage is asked
        for deeper candidates, coarse-ranked after the given ones, until ``k`` videos are found or none is left).
        ``excluded``: a row (ungrouped) or a source video (grouped) left out, the query's own for "more like"."""
        if not self.grouped:
            kept = [(int(r), float(s), stage) for r, s, stage in zip(rows, scores, stages, strict=True) if int(r) != excluded][:k]
            return [Hit(r, s, stage, self.index.record(r)) for r, s, stage in kept]
        while True:
            hits = [Hit(int(r), float(s), stage, self.index.record(int(r))) for r, s, stage in zip(rows, scores, stages, strict=True)]
            grouped = group_hits(hits, k, excluded)
            if len(grouped) >= k or len(rows) >= len(self.index):
                return grouped
            deeper_rows, deeper_scores = self._coarse(vector, min(len(self.index), 4 * len(rows)))[0]
            seen = set(rows.tolist())
            new = np.array([i for i, r in enumerate(deeper_rows) if int(r) not in seen], dtype=np.int64)
            if not len(new):  # the approximate index has nothing further to give
                return grouped
            rows, scores = np.concatenate([rows, deeper_rows[new]]), np.concatenate([scores, deeper_scores[new]])
            stages = stages + ["coarse"] * len(new)

    @property
    def method(self) -> str:
        return "approximate" if self.ann is not None else "exact"

    @torch.no_grad()
    def _encode(self, queries: list[str], encoder: QueryEncoder | None = None) -> TextFeatures:
        """Every query in one forward pass (padded to ``max_words``, or to the longest query where the encoder
        trims: a row's result does not depend on the others in the batch, up to float rounding)."""
        tokens = self.tokenize(queries, context_length=self.max_words).to(self.device)
        return (encoder or self.encoder)(tokens, lambda: inference_autocast(self.device))

    def _coarse(self, vectors: torch.Tensor, depth: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """(rows, scores) of the top ``depth`` for each query vector, best first."""
        if self.ann is not None:
            scores, rows = self.ann.search(vectors.cpu().numpy(), depth)
            return [(r[r >= 0], s[r >= 0]) for r, s in zip(rows, scores, strict=True)]
        top = torch.topk(vectors @ self.vectors.T, depth, dim=1)
        return list(zip(top.indices.cpu().numpy(), top.values.cpu().numpy(), strict=True))

    @torch.no_grad()
    def fine_scores(self, text: TextFeatures, rows: np.ndarray) -> np.ndarray:
        """The model's own similarity of one encoded query against the index rows ``rows``."""
        pooled = ["video"] if self.model.pool is not None else []  # tightTransf has no pooled vector: not read
        stored = {name: torch.from_numpy(self.index.take(name, rows)).to(self.device) for name in [*pooled, *self.fine_arrays]}
        video = VideoFeatures(
            frames=stored["frames"].float(),
            mask=stored["frame_mask"],
            pooled=stored["video"].float() if pooled else None,
            clip_frames=stored["clip_frames"].float() if "clip_frames" in stored else None,
            patches=stored.get("patches"),  # float16, as the evaluator holds them
        )
        pairs = self.model.similarity.pair_scorer(text, video)
        return pairs.block(slice(0, 1), slice(0, len(rows)))[0].float().cpu().numpy()

    def search(self, query: str | bytes, k: int = 10) -> SearchResult:
        """The top ``k`` videos for ``query`` (QueryError for a query that is not searchable text)."""
        return self.search_batch([query], [k])[0]

    @torch.no_grad()
    def search_batch(self, queries: list[str | bytes], ks: list[int]) -> list[SearchResult]:
        """Several queries at once: one text-encoder pass and one first-stage product for all of them
        (what the service does with concurrent requests), then each query's own rerank."""
        texts = [check_query(query) for query in queries]
        if any(k < 1 for k in ks):
            raise ValueError(f"k must be at least 1, not {min(ks)}")
        clock = {"start": time.perf_counter()}
        text = self._encode(texts)
        vectors = self.model.coarse_text_vector(text.pooled).float()
        clock["encode"] = time.perf_counter()
        depth = max(self._depth(max(ks)), min(len(self.index), self.rerank_topk))
        coarse = self._coarse(vectors, depth)
        clock["coarse"] = time.perf_counter()
        results = []
        for i, (query, k, (rows, scores)) in enumerate(zip(texts, ks, coarse, strict=True)):
            started = time.perf_counter()
            stages = ["coarse"] * len(rows)
            reranked = min(self.rerank_topk, len(rows))
            if reranked:
                mine = TextFeatures(text.pooled[i : i + 1], None if text.tokens is None else text.tokens[i : i + 1],
                                    None if text.mask is None else text.mask[i : i + 1])  # fmt: skip
                fine = self.fine_scores(mine, rows[:reranked])
                order = np.argsort(-fine, kind="stable")
                rows = np.concatenate([rows[:reranked][order], rows[reranked:]])
                scores = np.concatenate([fine[order], scores[reranked:]])
                stages = ["fine"] * reranked + stages[reranked:]
            fine_done = time.perf_counter()
            hits = self._ranked_hits(vectors[i : i + 1], rows, scores, stages, k)
            done = time.perf_counter()
            milliseconds = {
                "encode": 1e3 * (clock["encode"] - clock["start"]),  # of the whole batch, as are "coarse" and the batch size
                "coarse": 1e3 * (clock["coarse"] - clock["encode"]),
                "fine": 1e3 * (fine_done - started),
                "total": 1e3 * (clock["coarse"] - clock["start"] + done - started),
            }
            results.append(SearchResult(query, hits, self.method, reranked, milliseconds, len(texts)))
        return results


def agreement_in_index(reference: torch.Tensor, candidate: torch.Tensor, first_stage: Callable) -> dict:
    """``query_encoder.agreement`` over the index's own first stage (exact or approximate): the least cosine
    between the two vectors of a caption, and the share of captions whose top 10 rows are identical."""
    cosines = torch.nn.functional.cosine_similarity(reference, candidate, dim=1)
    tops = [[rows.tolist() for rows, _ in first_stage(vectors)] for vectors in (reference, candidate)]
    same = float(np.mean([a == b for a, b in zip(*tops, strict=True)]))
    return {"captions": len(reference), "min_cosine": round(float(cosines.min()), 6), "same_top10": same}


def check_vector(vector: object, dim: int) -> np.ndarray:
    """A query vector as float32 of the index's dimension, finite and not all zeros, or VectorQueryError saying why.

    Checked before anything is converted: a flat list of ``dim`` JSON numbers (not strings, booleans or
    nested lists) or a 1-D real-valued array; an integer too large for a float is "not finite"."""
    if isinstance(vector, np.ndarray):
        if vector.dtype.kind not in REAL_KINDS:
            raise VectorQueryError(f"the vector holds {vector.dtype.name} values; a query vector is real numbers")
    elif isinstance(vector, list | tuple):
        if len(vector) != dim:
            raise VectorQueryError(f"the vector has {len(vector)} values; this index's vectors have {dim} dimensions")
        if not all(type(value) in (int, float) for value in vector):
            wrong = next(value for value in vector if type(value) not in (int, float))
            raise VectorQueryError(f"the vector holds a {type(wrong).__name__}; a query vector is a flat list of numbers")
    else:
        raise VectorQueryError(f"the vector is a {type(vector).__name__}; send a list of {dim} numbers")
    try:
        with np.errstate(over="ignore"):  # past float32's range is infinite, refused below
            array = np.asarray(vector, dtype=np.float64).astype(np.float32)
    except OverflowError:
        raise VectorQueryError("the vector holds a number too large for a float") from None
    if array.ndim != 1 or array.shape[0] != dim:
        raise VectorQueryError(f"the vector has shape {list(array.shape)}; this index's vectors have {dim} dimensions")
    if not np.isfinite(array).all():
        raise VectorQueryError("the vector holds NaN or infinite values (or a number too large for a float)")
    if not np.any(array):
        raise VectorQueryError("the vector is all zeros")
    return array


def open_searcher(index_url: str, checkpoint: str | None = None, base_weights: str | None = None, mode: str = "auto",
                  rerank_topk: int = DEFAULT_RERANK_TOPK, nprobe: int | None = None, device: torch.device | None = None,
                  group: bool = True, query_encoder: str = "fp32") -> Searcher:  # fmt: skip
    """The index and the model that made it (the checkpoint it recorded, or ``checkpoint`` if it moved)."""
    return searcher_for(VideoIndex(index_url), checkpoint, base_weights, mode, rerank_topk, nprobe, device, group, query_encoder)


def searcher_for(index: VideoIndex, checkpoint: str | None = None, base_weights: str | None = None, mode: str = "auto",
                 rerank_topk: int = DEFAULT_RERANK_TOPK, nprobe: int | None = None, device: torch.device | None = None,
                 group: bool = True, query_encoder: str = "fp32") -> Searcher:  # fmt: skip
    """A searcher over an index already opened, with the model it records loaded."""
    manifest = index.manifest
    trained = load_trained_model(checkpoint or manifest["checkpoint"], manifest.get("checkpoint_format", "auto"), base_weights,
                                 manifest["max_frames"], manifest["max_words"])  # fmt: skip
    return Searcher(index, trained, device, mode, rerank_topk, nprobe, group, query_encoder)
