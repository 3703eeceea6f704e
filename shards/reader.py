"""Reads samples back from shards on local disk or any fsspec URL (s3:// included).

webdataset's own URL opener shells out (``pipe:aws s3 cp``) for S3, which users report
breaking; here each shard is opened through fsspec and handed to webdataset's tar
iterators, which do the member grouping.

Object stores drop connections and stall. Every read of a shard goes through
``RetryingShardStream``: a failed or timed-out read reopens the object at the byte where it
stopped (a ranged GET, so nothing is read twice and nothing is skipped) after an exponential
backoff, and after ``ReadPolicy.retries`` attempts gives up with a ShardReadError naming the
shard and the byte offset. A socket read timeout (``ReadPolicy.timeout_s``) turns a stalled
connection into such a retry, so a read never hangs. Missing objects and permission errors
are not retried: waiting does not make them appear.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import braceexpand
import fsspec
from webdataset import tariterators

from shards.manifest import MANIFEST_NAME, read_manifest
from shards.read_policy import ReadPolicy
from shards.storage import Store


class ShardReadError(IOError):
    """A shard that could not be opened or parsed; names the shard URL."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"shard {url}: {reason}")
        self.url = url
        self.reason = reason


def shard_urls(location: str) -> list[str]:
    """Shard URLs for a build folder (from its manifest), a brace pattern, or one tar."""
    location = location.rstrip("/")
    if location.endswith(".tar") or "{" in location:
        return list(braceexpand.braceexpand(location))
    store = Store(location)
    if store.exists(MANIFEST_NAME):
        return [store.url_of(shard["name"]) for shard in read_manifest(store)["shards"]]
    names = [name for name in store.listdir("") if name.endswith(".tar")]
    if not names:
        raise ShardReadError(location, "no manifest.json and no .tar shards found")
    return [store.url_of(name) for name in names]


@dataclass
class ReadErrors:
    """Collects per-shard problems so a caller can skip bad shards and still report them."""

    errors: list[tuple[str, str]] = field(default_factory=list)

    def handler(self, error: ShardReadError) -> bool:
        self.errors.append((error.url, error.reason))
        return True


PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, TypeError, AttributeError)  # waiting will not help


def storage_options(url: str, policy: ReadPolicy) -> dict:
    """Per-protocol options so that a stalled read times out and only our loop retries."""
    if url.startswith(("s3://", "s3a://")):
        config = {"connect_timeout": policy.timeout_s, "read_timeout": policy.timeout_s, "retries": {"max_attempts": 1}}
        return {"config_kwargs": config}
    return {}


class RetryingShardStream:
    """A read-only stream over one shard that survives dropped and stalled connections."""

    def __init__(self, url: str, policy: ReadPolicy) -> None:
        self.url, self.policy = url, policy
        self.position = 0
        self.retries_used = 0
        self._file = None
        self._attempt(lambda: None)  # open now, so a missing shard fails here

    def _open(self) -> None:
        fs, path = fsspec.core.url_to_fs(self.url, **storage_options(self.url, self.policy))
        if hasattr(fs, "retries"):
            fs.retries = 1  # s3fs's own retry loop would multiply ours (and its waits)
        handle = fs.open(path, "rb")
        if self.position:
            handle.seek(self.position)
        self._file = handle

    def _drop(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            with contextlib.suppress(Exception):  # the connection is already broken
                handle.close()

    def _attempt(self, operation: Callable):
        for attempt in range(self.policy.retries + 1):
            try:
                if self._file is None:
                    self._open()
                return operation()
            except PERMANENT_ERRORS as error:
                raise ShardReadError(self.url, f"{type(error).__name__}: {error}") from error
            except Exception as error:  # noqa: BLE001 - network errors come from many libraries
                self._drop()
                if attempt == self.policy.retries:
                    raise ShardReadError(
                        self.url, f"gave up after {attempt + 1} attempts at byte {self.position}: {type(error).__name__}: {error}"
                    ) from error
                self.retries_used += 1
                time.sleep(min(30.0, self.policy.backoff_s * 2**attempt))
        raise AssertionError("unreachable")

    def read(self, size: int = -1) -> bytes:
        data = self._attempt(lambda: self._file.read(size))
        self.position += len(data)
        return data

    def close(self) -> None:
        self._drop()

    def __enter__(self) -> RetryingShardStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shard_files(url: str, policy: ReadPolicy) -> Iterator[dict]:
    with RetryingShardStream(url, policy) as stream:
        for member in tariterators.tar_file_iterator(stream):
            member["__url__"] = url
            yield member


def _files(urls: list[str], handler: Callable[[ShardReadError], bool], policy: ReadPolicy) -> Iterator[dict]:
    """Tar members of every shard, then webdataset's end-of-shard marker ``{}``.

    A shard that cannot be opened or ends early is reported once, by URL, and the files read
    before the fault are kept (a sample cut in half is caught by ``is_complete_sample``).
    """
    for url in urls:
        try:
            yield from _shard_files(url, policy)
        except Exception as error:  # noqa: BLE001 - open, network and tar errors alike
            if isinstance(error, ShardReadError):  # webdataset may have appended the stream to its args
                wrapped = ShardReadError(url, error.reason)
            else:
                detail = re.sub(r" @ <[^>]*>", "", str(error))  # webdataset appends the stream's repr
                wrapped = ShardReadError(url, f"{type(error).__name__}: {detail}")
            if not handler(wrapped):
                raise wrapped from error
        yield {}


def iter_samples(
    urls: list[str], handler: Callable[[ShardReadError], bool] | None = None, policy: ReadPolicy | None = None
) -> Iterator[dict]:
    """Samples as dicts of raw bytes (``__key__``, ``__url__``, ``00.jpg``..., ``json``).

    Without a handler the first problem raises ShardReadError naming the shard; pass
    ``ReadErrors().handler`` to skip the rest of a bad shard and record it instead.
    """
    yield from tariterators.group_by_keys(_files(urls, handler or (lambda error: False), policy or ReadPolicy()))
