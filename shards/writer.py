"""Writes one shard so that it is either complete under its final name or absent.

webdataset's own ShardWriter opens the final name directly; a killed process leaves a
truncated tar that readers then fail on. Here the tar is written to a staging path and
published by ``Store.staged`` only after ``close``.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from types import TracebackType

from shards.storage import Store


class AtomicShardWriter:
    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self.keys: list[str] = []
        self._stack = ExitStack()
        local_path = self._stack.enter_context(store.staged(name))
        self._handle = self._stack.enter_context(open(local_path, "wb"))
        # imported here, when the first shard opens: webdataset imports torch (~1.5 s), which a build's
        # planning, its --help and its first decodes never need
        import webdataset as wds

        # fixed mtime: rerunning a build gives byte-identical shards
        self._tar = wds.TarWriter(self._handle, encoder=False, mtime=0.0)
        self._local_path = local_path
        self.final_bytes = 0

    def write(self, sample: dict) -> None:
        self._tar.write(sample)
        self.keys.append(sample["__key__"])

    @property
    def bytes_written(self) -> int:
        self._handle.flush()
        return os.path.getsize(self._local_path)

    def __enter__(self) -> AtomicShardWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self._tar.close()  # writes the tar end-of-archive blocks; the handle stays open
            self._handle.flush()
            self.final_bytes = os.path.getsize(self._local_path)
        self._stack.__exit__(exc_type, exc, tb)
