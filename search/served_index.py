"""The index a service answers from, and swapping it for a newer one without a restart.

``ServedIndex`` is one loaded index with its searcher, a key -> row table for ``/api/video/{key}``
and the frames pages' sample cache; it is never changed once built. ``IndexHolder`` keeps the
current one: ``reload`` builds a complete new ``ServedIndex`` beside the old (vectors loaded, keys
read, model checked) and only then replaces the reference, so requests in flight finish on the
old one, and a reload that fails (a half-copied index, another model's checkpoint missing) leaves
the old one serving and reports why. The model is reused when the new index was made with the same
weights (an index appended to by ``search.index``, or a rebuilt one), so a reload costs the index's
loading, not the checkpoint's.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from search.index_format import VideoIndex
from search.options import DEFAULT_RERANK_TOPK
from search.searcher import Searcher, searcher_for
from shards.reader import ReadErrors, iter_samples

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSettings:
    """How the searcher is made, the same at start and at every reload."""

    index_url: str
    checkpoint: str | None = None
    base_weights: str | None = None
    mode: str = "auto"
    rerank_topk: int = DEFAULT_RERANK_TOPK
    nprobe: int | None = None  # None: the index's own (index.json ann.nprobe)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    group: bool = True  # one hit per source video for an index of windows (search/moments.py)
    query_encoder: str = "auto"  # search/query_encoder.py


class SampleCache:
    """The last few samples read back from their shards, for the frames page (a shard is read
    from its start until the sample's key: seconds for a large shard, so results are kept)."""

    def __init__(self, size: int = 8) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, shard: str, key: str) -> dict:
        with self.lock:
            if (shard, key) in self.items:
                self.items.move_to_end((shard, key))
                return self.items[(shard, key)]
        errors = ReadErrors()
        found = next((s for s in iter_samples([shard], errors.handler) if s.get("__key__") == key), None)
        if found is None:
            reason = f" ({errors.errors[0][1]})" if errors.errors else ""
            raise FileNotFoundError(f"sample {key!r} not found in {shard}{reason}")
        with self.lock:
            self.items[(shard, key)] = found
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return found


@dataclass
class ServedIndex:
    searcher: Searcher
    rows_by_key: dict[str, int]
    loaded_at: str
    samples: SampleCache = field(default_factory=SampleCache)

    @property
    def index(self) -> VideoIndex:
        return self.searcher.index

    @classmethod
    def open(cls, settings: SearchSettings, previous: Searcher | None = None) -> ServedIndex:
        index = VideoIndex(settings.index_url)
        if previous is not None and index.manifest["model_sha256"] == previous.fingerprint:
            searcher = Searcher(index, previous.trained, settings.device, settings.mode, settings.rerank_topk, settings.nprobe, settings.group,
                                settings.query_encoder)  # fmt: skip
        else:
            searcher = searcher_for(index, settings.checkpoint, settings.base_weights, settings.mode, settings.rerank_topk, settings.nprobe,
                                    settings.device, settings.group, settings.query_encoder)  # fmt: skip
        rows = {key: row for row, key in enumerate(index.keys())}
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return cls(searcher, rows, now)

    def row_of(self, key: str) -> int:
        if key not in self.rows_by_key:
            raise LookupError(f"no video with the key {key[:100]!r} in the index")
        return self.rows_by_key[key]


class IndexHolder:
    """The current ``ServedIndex``; ``reload`` swaps in a newer one atomically (one reload at a time)."""

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self._current = ServedIndex.open(settings)
        self._reload_lock = threading.Lock()
        self.reloads = 0

    @property
    def current(self) -> ServedIndex:
        return self._current

    def reload(self) -> ServedIndex:
        """Loads the index at ``settings.index_url`` again and serves it once it is ready; raises (and
        keeps the old one serving) when it cannot be loaded."""
        with self._reload_lock:
            fresh = ServedIndex.open(self.settings, previous=self._current.searcher)
            self._current = fresh  # one reference assignment: every later request sees the new index
            self.reloads += 1
            logger.info("serving %s: %d videos (reload %d)", self.settings.index_url, len(fresh.index), self.reloads)
            return fresh
