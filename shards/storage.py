"""One interface over a local folder and an object store URL (``s3://bucket/prefix``).

Visibility is the contract: a file appears under its final name only when complete.
Uploads are staged in a per-process folder under ``staging_root()``; a process killed mid-upload
leaves its folder behind, and the next process that stages anything removes it.
Locally that is a write to a hidden temporary name plus ``os.replace`` (atomic on POSIX);
on S3 a single PUT (or a completed multipart upload) is atomic by the service's design.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec
from fsspec.implementations.local import LocalFileSystem

from shards.probe import probe_location
from shards.storage_errors import StorageError

__all__ = ["Store", "StorageError"]


STAGING_ROOT_NAME = "clip4clip-stream-staging"
_staging_dir: str | None = None


def staging_root() -> str:
    """Where uploads to object stores are staged: one folder per process under this root."""
    return os.environ.get("CLIP4CLIP_STAGING_DIR") or os.path.join(tempfile.gettempdir(), STAGING_ROOT_NAME)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_staging() -> int:
    """Deletes the staging folders of processes that no longer run (a killed build or trainer
    leaves its half-uploaded shard or checkpoint there); returns how many were removed."""
    root = staging_root()
    if not os.path.isdir(root):
        return 0
    removed = 0
    for entry in os.listdir(root):
        pid_text = entry.split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _process_alive(int(pid_text)):
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
            removed += 1
    return removed


def process_staging_dir() -> str:
    """This process's staging folder; the first call also clears dead processes' folders."""
    global _staging_dir
    if _staging_dir is None or not os.path.isdir(_staging_dir) or not _staging_dir.split(os.sep)[-1].startswith(f"{os.getpid()}-"):
        os.makedirs(staging_root(), exist_ok=True)
        remove_stale_staging()
        _staging_dir = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=staging_root())
    return _staging_dir


class Store:
    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        except (ImportError, ValueError) as error:
            raise StorageError(f"{url}: unsupported storage URL ({error})") from error
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root = self.root.rstrip("/")

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def url_of(self, name: str) -> str:
        """The address another process (trainer, inspector) should open."""
        if self.is_local:
            return self.path(name)
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{protocol}://{self.path(name)}"

    def ensure_root(self) -> None:
        try:
            if self.is_local:
                os.makedirs(self.root, exist_ok=True)
            else:
                probe_location(self.url, must_exist=False)
        except OSError as error:
            if isinstance(error, StorageError):
                raise
            raise StorageError(f"{self.url}: cannot use output location ({error})") from error

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(name))
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{self.url_of(name)}: not found") from error

    def listdir(self, folder: str) -> list[str]:
        """Names (not paths) of the files directly inside ``folder``; [] if it is absent."""
        try:
            entries = self.fs.ls(self.path(folder), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(os.path.basename(entry.rstrip("/")) for entry in entries)

    def size(self, name: str) -> int:
        return int(self.fs.size(self.path(name)))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Atomically replaces ``name`` with ``data``."""
        with self.staged(name) as local_path:
            with open(local_path, "wb") as handle:
                handle.write(data)

    def remove(self, name: str) -> None:
        if self.exists(name):
            self.fs.rm(self.path(name))

    @contextmanager
    def staged(self, name: str) -> Iterator[str]:
        """Yields a local path to write; on clean exit it becomes ``name`` in one step.

        On an exception the partial file is deleted and nothing becomes visible.
        """
        target = self.path(name)
        if self.is_local:
            directory = os.path.dirname(target)
            os.makedirs(directory, exist_ok=True)
            local = os.path.join(directory, f".{os.path.basename(target)}.partial-{uuid.uuid4().hex[:8]}")
        else:
            scratch = tempfile.mkdtemp(dir=process_staging_dir())
            local = os.path.join(scratch, os.path.basename(target))
        try:
            yield local
            if self.is_local:
                with open(local, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.replace(local, target)
            else:
                try:
                    self.fs.put_file(local, target)
                except OSError as error:
                    raise StorageError(f"{self.url_of(name)}: upload failed ({error})") from error
        finally:
            if os.path.exists(local):
                os.remove(local)
            if not self.is_local:
                os.rmdir(os.path.dirname(local))

    def remove_partials(self, stems: list[str]) -> int:
        """Deletes leftovers of killed local writes (``.STEM.tar.partial-*``, ``.STEM-K.tar...``).

        Only for the given stems (folder/name without extension): in cluster mode other jobs
        may be writing their own files into the same folder right now. S3 has no partial
        objects to clean.
        """
        if not self.is_local:
            return 0
        removed = 0
        for stem in stems:
            directory, base = os.path.split(self.path(stem))
            if not os.path.isdir(directory):
                continue
            for entry in os.listdir(directory):
                if ".partial-" in entry and (entry.startswith(f".{base}.") or entry.startswith(f".{base}-")):
                    os.remove(os.path.join(directory, entry))
                    removed += 1
        return removed
