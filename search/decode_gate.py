"""Decoding query files as a bounded resource: how many at once, what one may cost, and who stops it.

A query file (a video or an image uploaded to the search service) is decoded by an ffmpeg child,
and one small file can ask for a lot: a 7.7 KB mp4 that declares 10 hours of 1080p held ~1 GB and a
core for two minutes. So every decode goes through a ``DecodeGate``:

- **Admission**: at most ``concurrent`` decodes run and ``queue`` more requests wait (counted from
  before the upload is read, so buffered uploads are bounded too); the next one is refused at once
  with 503 and ``Retry-After`` (``ServiceBusy``), as nginx's ``limit_conn`` would.
- **Before decoding** (``QueryDecodeLimits.check_source``): the input banner ffmpeg prints before its
  first frame gives duration, frame rate and size; a file longer than ``max_seconds``, with more than
  ``max_pixels`` per frame or declaring more than ``max_frames`` frames is refused (413) and its child
  killed before a frame is decoded (as Pillow's ``MAX_IMAGE_PIXELS`` refuses a decompression bomb).
- **While decoding**: a wall time (``wall_s``), an address-space cap on the child (``memory_mb``,
  RLIMIT_AS), a fixed number of ffmpeg threads, and one decode per request (a file whose header hides
  its duration is decoded once, up to ``max_seconds``, never twice).
- **The client**: the child is killed as soon as the client disconnects (``ClientGone``).

Decodes run on the gate's own threads, never on the server's shared pool, so a flood of uploads
cannot starve the routes that run there. Text queries do not pass through here at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from starlette.requests import Request

from pipeline.extract import DecodeGuards
from search.decode_limits import QueryDecodeLimits

T = TypeVar("T")
DECODE_THREADS = 1  # ffmpeg threads per query decode: one decode costs about one core, and the same address space everywhere


class ServiceBusy(RuntimeError):
    """Every decode slot and queue place is taken: 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ClientGone(RuntimeError):
    """The client disconnected while its file waited or decoded; the decode was stopped."""


class DecodeGate:
    """Admission, the decode slots and their threads, and the disconnect watch (module docstring)."""

    def __init__(self, limits: QueryDecodeLimits) -> None:
        self.limits = limits
        self.executor = ThreadPoolExecutor(limits.concurrent, thread_name_prefix="query-decode")
        self.admitted = 0  # requests holding a place: uploading, waiting or decoding
        self.decoding = 0
        self.refused = 0
        self.cancelled = 0
        self._slots: asyncio.Semaphore | None = None  # made on the server's loop, at first use

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    @contextlib.asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """A place for one request (ServiceBusy when there is none), held until it is answered."""
        places = self.limits.concurrent + self.limits.queue
        if self.admitted >= places:
            self.refused += 1
            raise ServiceBusy(f"{places} query files are being received or decoded, the most this service takes at once; "
                              f"try again in {self.limits.retry_after_s} s", self.limits.retry_after_s)  # fmt: skip
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    def guards(self, cancel: threading.Event) -> DecodeGuards:
        return DecodeGuards(check_source=self.limits.check_source, address_space_bytes=self.limits.memory_mb << 20, cancel=cancel,
                            single_pass=True, threads=DECODE_THREADS)  # fmt: skip

    async def run(self, request: Request, work: Callable[[DecodeGuards], T]) -> T:
        """``work(guards)`` on a decode thread once a slot is free; ClientGone (its child killed) when the
        client disconnects first."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.concurrent)
        cancel = threading.Event()
        started = asyncio.Event()

        async def decode() -> T:
            assert self._slots is not None
            async with self._slots:
                started.set()
                self.decoding += 1
                try:
                    return await asyncio.get_running_loop().run_in_executor(self.executor, work, self.guards(cancel))
                finally:
                    self.decoding -= 1

        job = asyncio.ensure_future(decode())
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({job, gone}, return_when=asyncio.FIRST_COMPLETED)
        if job.done():
            gone.cancel()
            return job.result()
        self.cancelled += 1
        cancel.set()  # the watchdog kills the child within 50 ms; the thread then returns
        if not started.is_set():
            job.cancel()
        with contextlib.suppress(BaseException):
            await job
        raise ClientGone("the client disconnected; its decode was stopped")

    def to_json(self) -> dict:
        return {**self.limits.to_json(), "admitted": self.admitted, "decoding": self.decoding, "refused_busy": self.refused,
                "cancelled_on_disconnect": self.cancelled}  # fmt: skip


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body is already read: only a disconnect can arrive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
