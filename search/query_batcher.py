"""Concurrent requests' queries encoded together by one thread that owns the model.

The text encoder is the cost of a search (31 ms a query for ViT-B/32 on 2 cores), and one forward
pass over many queries costs less than as many passes (2.3x the queries/s at 8 clients on 2 cores:
BENCHMARKS.md). Requests put their query on a queue and wait
on a future; one thread takes *everything queued* at that moment (up to ``max_batch``) and runs
``Searcher.search_batch`` on it. Nothing waits for a batch to fill: one request alone is encoded
at once, and under load each batch grows to what arrived during the previous one, so throughput
grows with load while latency at low load stays a single query's.

The searcher is asked for per batch (``current``), so a swapped index serves from the next batch
on, and every query of a batch is answered from one index.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

from search.options import DEFAULT_MAX_BATCH
from search.searcher import Searcher, SearchResult

logger = logging.getLogger(__name__)


class QueryBatcher:
    def __init__(self, current: Callable[[], Searcher], max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.current, self.max_batch = current, max_batch
        self.queue: queue.Queue[tuple[str, int, Future] | None] = queue.Queue()
        self.batches = 0
        self.queries = 0
        self.thread = threading.Thread(target=self._run, name="query-batcher", daemon=True)
        self.thread.start()

    async def search(self, query: str, k: int) -> SearchResult:
        """The result of one (already checked) query, encoded with whatever else is waiting."""
        future: Future = Future()
        self.queue.put((query, k, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=10)

    def _take_batch(self) -> list[tuple[str, int, Future]] | None:
        first = self.queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self.queue.put(None)  # stop after this batch
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            live = [item for item in batch if item[2].set_running_or_notify_cancel()]  # a request whose client left
            if not live:
                continue
            try:
                results = self.current().search_batch([q for q, _, _ in live], [k for _, k, _ in live])
            except BaseException as error:  # noqa: BLE001 - each waiting request gets the error, the thread lives on
                logger.exception("a batch of %d queries failed", len(live))
                for _, _, future in live:
                    future.set_exception(error)
                continue
            self.batches += 1
            self.queries += len(live)
            for (_, _, future), result in zip(live, results, strict=True):
                future.set_result(result)
