"""Reads samples back from shards on local disk or any fsspec URL (s3:// included).

webdataset's own URL opener shells out (``pipe:aws s3 cp``) for S3, which users report
breaking; here each shard is opened through fsspec and handed to webdataset's tar
iterators, which do the member grouping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import braceexpand
import fsspec
from webdataset import tariterators

from shards.manifest import MANIFEST_NAME, read_manifest
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


def _shard_files(url: str) -> Iterator[dict]:
    with fsspec.open(url, "rb") as stream:
        for member in tariterators.tar_file_iterator(stream):
            member["__url__"] = url
            yield member


def _files(urls: list[str], handler: Callable[[ShardReadError], bool]) -> Iterator[dict]:
    """Tar members of every shard, then webdataset's end-of-shard marker ``{}``.

    A shard that cannot be opened or ends early is reported once, by URL, and the files read
    before the fault are kept (a sample cut in half is caught by ``is_complete_sample``).
    """
    for url in urls:
        try:
            yield from _shard_files(url)
        except Exception as error:  # noqa: BLE001 - open, network and tar errors alike
            detail = re.sub(r" @ <[^>]*>", "", str(error))  # webdataset appends the stream's repr
            wrapped = ShardReadError(url, f"{type(error).__name__}: {detail}")
            if not handler(wrapped):
                raise wrapped from error
        yield {}


def iter_samples(urls: list[str], handler: Callable[[ShardReadError], bool] | None = None) -> Iterator[dict]:
    """Samples as dicts of raw bytes (``__key__``, ``__url__``, ``00.jpg``..., ``json``).

    Without a handler the first problem raises ShardReadError naming the shard; pass
    ``ReadErrors().handler`` to skip the rest of a bad shard and record it instead.
    """
    yield from tariterators.group_by_keys(_files(urls, handler or (lambda error: False)))
