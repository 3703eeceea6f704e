"""The video index on disk: what each file holds, how parts are written and committed, how it is read.

An index is a folder (local or any fsspec URL)::

    index.json                  what made it and what it holds (see ``describe_index``), and the
                                committed parts in row order; search reads only these
    ann.faiss                   optional approximate index over ``video`` (faiss, search/ann.py)
    parts/NAME/part.json        rows, the shards it covers (with per-shard counts), when, by whom
    parts/NAME/video.npy        (N, D) float16: the text-agnostic video vector of the coarse score
    parts/NAME/frames.npy       (N, T, D) float16 per-frame features  } only when the model's
    parts/NAME/frame_mask.npy   (N, T) bool, real frames              } similarity has a fine stage
    parts/NAME/clip_frames.npy  (N, T, D) float16 CLIP frame features } only for EERCF
    parts/NAME/patches.npy      (N, T, P, D) float16 patch tokens     }
    parts/NAME/rows.bin + rows.offsets.npy              one JSON object per row (key, shard, captions)
    parts/NAME/thumbnails.bin + thumbnails.offsets.npy  one JPEG per row (a strip of frames)

Every array is a plain ``.npy`` (``np.load(path, mmap_mode="r")``); a ``.bin`` file is the rows'
bytes back to back, row i being ``bin[offsets[i]:offsets[i + 1]]``. Rows of the index are the
parts' rows in ``index.json`` order.

Parts are the unit of commit. A part is written under a staging name and appears complete or not
at all (a local rename, or ``part.json`` uploaded last to a bucket), so a killed indexing job
leaves either whole parts, which the next run adopts, or staging leftovers, which it deletes.
Arrays are streamed to disk row batch by row batch (the ``.npy`` header is rewritten with the
final row count on close), so memory stays flat however large a part grows.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

import numpy as np

from shards.storage import StorageError, Store, process_staging_dir

INDEX_FORMAT = "clip4clip-index/1"
INDEX_FILE = "index.json"
PARTS_FOLDER = "parts"
PART_FILE = "part.json"
ANN_FILE = "ann.faiss"
STAGING_PREFIX = ".staging-"
# what each array holds, for index.json (the README's table says the same)
ARRAY_DTYPES = {"video": np.float16, "frames": np.float16, "frame_mask": np.bool_, "clip_frames": np.float16, "patches": np.float16}
BLOBS = ("rows", "thumbnails")


class IndexFormatError(ValueError):
    """An index that cannot be used as asked (other model, other format, missing files)."""


def arrays_for(has_fine_stage: bool, reads_patches: bool) -> list[str]:
    """The arrays a model's search reads: the coarse vector always, the fine stage's inputs when it has one."""
    names = ["video"]
    if has_fine_stage:
        names += ["frames", "frame_mask"]
    if reads_patches:
        names += ["clip_frames", "patches"]
    return names


# ---------------------------------------------------------------------------------------- writing


def encode_record(record: dict) -> bytes:
    """A row of rows.bin: one JSON object and a newline (json.dumps escapes newlines inside)."""
    return json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"


def part_records(store: Store, part: str) -> list[dict]:
    """Every row record of one part, in row order (one read of its rows.bin)."""
    return [json.loads(line) for line in store.read_bytes(f"{PARTS_FOLDER}/{part}/rows.bin").splitlines()]


def check_format(manifest: dict, store: Store) -> None:
    if manifest.get("format") != INDEX_FORMAT:
        raise IndexFormatError(f"{store.url_of(INDEX_FILE)}: format {manifest.get('format')!r}, this version reads and writes {INDEX_FORMAT!r}")


class NpyAppender:
    """A ``.npy`` file grown row batch by row batch; its header is rewritten with the row count on close.

    The header is always 128 bytes for the shapes an index holds (numpy pads it to 64), so the
    rewrite never moves the data.
    """

    def __init__(self, path: str, dtype: np.dtype) -> None:
        self.path, self.dtype = path, np.dtype(dtype)
        self.handle = open(path, "wb+")  # noqa: SIM115 - closed in close()
        self.row_shape: tuple[int, ...] | None = None
        self.rows = 0
        self.header_bytes = 0

    def _write_header(self) -> None:
        self.handle.seek(0)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.rows, *(self.row_shape or ()))}
        np.lib.format.write_array_header_1_0(self.handle, header)
        written = self.handle.tell()
        if self.header_bytes and written != self.header_bytes:
            raise RuntimeError(f"{self.path}: .npy header changed size ({self.header_bytes} -> {written})")
        self.header_bytes = written
        self.handle.seek(0, os.SEEK_END)

    def append(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=self.dtype)
        if self.row_shape is None:
            self.row_shape = tuple(batch.shape[1:])
            self._write_header()
        elif tuple(batch.shape[1:]) != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {batch.shape[1:]} after {self.row_shape}")
        self.handle.write(batch.tobytes())
        self.rows += batch.shape[0]

    def truncate(self, rows: int) -> None:
        """Drop every row from ``rows`` on (a shard that failed half-way is indexed whole or not at all)."""
        if rows >= self.rows:
            return
        self.rows = rows
        self.handle.truncate(self.header_bytes + rows * int(np.prod(self.row_shape)) * self.dtype.itemsize)
        self.handle.seek(0, os.SEEK_END)

    def close(self, row_shape: tuple[int, ...]) -> None:
        """``row_shape``: used when no row was ever appended (an empty part still has a valid array)."""
        if self.row_shape is None:
            self.row_shape = row_shape
        self._write_header()
        self.handle.close()


class BlobAppender:
    """Variable-length rows (JSON, JPEG) back to back, with an offsets array to find each."""

    def __init__(self, folder: str, name: str) -> None:
        self.folder, self.name = folder, name
        self.handle = open(os.path.join(folder, f"{name}.bin"), "wb+")  # noqa: SIM115 - closed in close()
        self.offsets = [0]

    def append(self, data: bytes) -> None:
        self.handle.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def truncate(self, rows: int) -> None:
        del self.offsets[rows + 1 :]
        self.handle.truncate(self.offsets[-1])
        self.handle.seek(0, os.SEEK_END)

    def close(self) -> None:
        self.handle.close()
        np.save(os.path.join(self.folder, f"{self.name}.offsets.npy"), np.asarray(self.offsets, dtype=np.int64))


class PartWriter:
    """One part being written in a local staging folder; ``commit`` publishes it whole."""

    def __init__(self, store: Store, name: str, arrays: list[str], row_shapes: dict[str, tuple[int, ...]]) -> None:
        self.store, self.name, self.row_shapes = store, name, row_shapes
        if store.is_local:  # staged beside its final place, so that the commit is one rename
            parts = store.path(PARTS_FOLDER)
            os.makedirs(parts, exist_ok=True)
            self.folder = os.path.join(parts, f"{STAGING_PREFIX}{name}-{uuid.uuid4().hex[:8]}")
            os.makedirs(self.folder)
        else:
            self.folder = tempfile.mkdtemp(prefix=f"{name}-", dir=process_staging_dir())
        self.arrays = {a: NpyAppender(os.path.join(self.folder, f"{a}.npy"), ARRAY_DTYPES[a]) for a in arrays}
        self.blobs = {b: BlobAppender(self.folder, b) for b in BLOBS}
        self.shards: list[dict] = []
        self.failed_shards: list[dict] = []
        self._shard_start = 0

    @property
    def rows(self) -> int:
        return len(self.blobs["rows"].offsets) - 1

    def add(self, arrays: dict[str, np.ndarray], records: list[dict], thumbnails: list[bytes]) -> None:
        for name, appender in self.arrays.items():
            appender.append(arrays[name])
        for record, thumbnail in zip(records, thumbnails, strict=True):
            self.blobs["rows"].append(encode_record(record))
            self.blobs["thumbnails"].append(thumbnail)

    def start_shard(self) -> None:
        self._shard_start = self.rows

    def finish_shard(self, url: str, skipped: dict) -> None:
        self.shards.append({"url": url, "rows": self.rows - self._shard_start, "skipped": skipped})

    def drop_shard(self, url: str, reason: str) -> None:
        """Forget the rows of a shard that failed part-way: it stays unindexed and the next run retries it."""
        for appender in self.arrays.values():
            appender.truncate(self._shard_start)
        for blob in self.blobs.values():
            blob.truncate(self._shard_start)
        self.failed_shards.append({"url": url, "reason": reason})

    def commit(self, info: dict) -> dict:
        """Close every file and publish the part; returns its part.json."""
        for name, appender in self.arrays.items():
            appender.close(self.row_shapes[name])
        for blob in self.blobs.values():
            blob.close()
        part = {"format": INDEX_FORMAT, "name": self.name, "rows": self.rows, "shards": self.shards, "failed_shards": self.failed_shards,
                "arrays": sorted(self.arrays), **info}  # fmt: skip
        with open(os.path.join(self.folder, PART_FILE), "w", encoding="utf-8") as handle:
            json.dump(part, handle, indent=1, ensure_ascii=False)
        target = self.store.path(f"{PARTS_FOLDER}/{self.name}")
        if self.store.is_local:
            os.replace(self.folder, target)
            return part
        try:  # part.json last: a part without it is a leftover, never read
            for file_name in sorted(os.listdir(self.folder), key=lambda f: f == PART_FILE):
                self.store.fs.put_file(os.path.join(self.folder, file_name), f"{target}/{file_name}")
        except OSError as error:
            raise StorageError(f"{self.store.url_of(PARTS_FOLDER + '/' + self.name)}: upload failed ({error})") from error
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        return part

    def abandon(self) -> None:
        for appender in self.arrays.values():
            appender.handle.close()
        for blob in self.blobs.values():
            blob.handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def read_json(store: Store, name: str) -> dict:
    """index.json / part.json, or an error naming the file (a truncated upload, a hand edit)."""
    try:
        value = json.loads(store.read_bytes(name))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IndexFormatError(f"{store.url_of(name)}: not a valid index file ({error})") from error
    if not isinstance(value, dict):
        raise IndexFormatError(f"{store.url_of(name)}: not a valid index file (a JSON object was expected)")
    return value


def committed_parts(store: Store) -> dict[str, dict]:
    """name -> part.json of every complete part (committed ones, and those of a run killed before it
    updated index.json); staging leftovers have no part.json and are skipped."""
    parts = {}
    for name in store.listdir(PARTS_FOLDER):
        if name.startswith(STAGING_PREFIX) or not store.exists(f"{PARTS_FOLDER}/{name}/{PART_FILE}"):
            continue
        parts[name] = read_json(store, f"{PARTS_FOLDER}/{name}/{PART_FILE}")
    return parts


def remove_staging_leftovers(store: Store) -> int:
    """Delete what killed runs left half-written (one indexing job per index at a time)."""
    removed = 0
    for name in store.listdir(PARTS_FOLDER):
        path = f"{PARTS_FOLDER}/{name}"
        if name.startswith(STAGING_PREFIX) or not store.exists(f"{path}/{PART_FILE}"):
            store.fs.rm(store.path(path), recursive=True)
            removed += 1
    return removed


# ---------------------------------------------------------------------------------------- reading


class NpyRows:
    """Rows of a ``.npy`` file: memory-mapped when local, read by byte range from a bucket."""

    def __init__(self, store: Store, name: str) -> None:
        self.url = store.url_of(name)
        self.local = store.is_local
        if self.local:
            self.array = np.load(store.path(name), mmap_mode="r")
            self.shape, self.dtype = self.array.shape, self.array.dtype
            return
        self.fs, self.path = store.fs, store.path(name)
        head = io.BytesIO(self.fs.cat_file(self.path, start=0, end=4096))
        version = np.lib.format.read_magic(head)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        self.shape, _, self.dtype = read_header(head)
        self.offset = head.tell()
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return int(self.shape[0])

    def all(self) -> np.ndarray:
        if self.local:
            return np.asarray(self.array)
        data = self.fs.cat_file(self.path, start=self.offset, end=self.offset + len(self) * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape)

    def slice(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop): a memory-mapped slice, or one byte-range read from a bucket."""
        if self.local:
            return np.asarray(self.array[start:stop])
        data = self.fs.cat_file(self.path, start=self.offset + start * self.row_bytes, end=self.offset + stop * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def take(self, rows: np.ndarray) -> np.ndarray:
        if self.local:
            return np.asarray(self.array[rows])
        chunks = [self.fs.cat_file(self.path, start=self.offset + r * self.row_bytes, end=self.offset + (r + 1) * self.row_bytes) for r in rows.tolist()]
        return np.frombuffer(b"".join(chunks), dtype=self.dtype).reshape((len(chunks), *self.shape[1:]))


class BlobRows:
    """Rows of a ``.bin`` blob: memory-mapped when local (no file opened per read), by byte range from a bucket."""

    def __init__(self, store: Store, folder: str, name: str) -> None:
        self.store, self.path = store, f"{folder}/{name}.bin"
        self.offsets = NpyRows(store, f"{folder}/{name}.offsets.npy").all()
        self.mapped: np.memmap | None = None
        if store.is_local and int(self.offsets[-1]) > 0:
            self.mapped = np.memmap(store.path(self.path), dtype=np.uint8, mode="r")

    def get(self, row: int) -> bytes:
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        if start == end:
            return b""
        if self.mapped is not None:
            return self.mapped[start:end].tobytes()
        return self.store.fs.cat_file(self.store.path(self.path), start=start, end=end)


@dataclass
class IndexedPart:
    name: str
    info: dict
    arrays: dict[str, NpyRows]
    rows: BlobRows
    thumbnails: BlobRows


class VideoIndex:
    """A committed index, read as ``index.json`` lists it: rows, their features, records and thumbnails."""

    def __init__(self, url: str) -> None:
        self.store = Store(url)
        self.url = url
        if not self.store.exists(INDEX_FILE):
            raise FileNotFoundError(f"{self.store.url_of(INDEX_FILE)}: not found (make one with python -m search.index)")
        self.manifest = read_json(self.store, INDEX_FILE)
        check_format(self.manifest, self.store)
        self.parts = []
        for name in self.manifest["parts"]:
            folder = f"{PARTS_FOLDER}/{name}"
            info = read_json(self.store, f"{folder}/{PART_FILE}")
            arrays = {a: NpyRows(self.store, f"{folder}/{a}.npy") for a in info["arrays"]}
            self.parts.append(IndexedPart(name, info, arrays, BlobRows(self.store, folder, "rows"), BlobRows(self.store, folder, "thumbnails")))
        self.starts = np.cumsum([0] + [p.info["rows"] for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, row: int) -> tuple[IndexedPart, int]:
        if not 0 <= row < len(self):
            raise IndexError(f"row {row} outside the index's {len(self)} rows")
        part = int(np.searchsorted(self.starts, row, side="right")) - 1
        return self.parts[part], row - int(self.starts[part])

    def video_vectors(self) -> np.ndarray:
        """(N, D) float32 coarse video vectors, in row order (loaded into memory once)."""
        dim = self.manifest["dim"]
        out = np.empty((len(self), dim), dtype=np.float32)
        for part, start in zip(self.parts, self.starts, strict=False):
            out[start : start + part.info["rows"]] = part.arrays["video"].all()
        return out

    def take(self, array: str, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (any order) of one array, e.g. the frames of a query's candidates."""
        pieces, order = [], []
        parts = np.searchsorted(self.starts, rows, side="right") - 1
        for part in np.unique(parts):
            chosen = np.nonzero(parts == part)[0]
            pieces.append(self.parts[part].arrays[array].take(rows[chosen] - self.starts[part]))
            order.append(chosen)
        stacked = np.concatenate(pieces)
        out = np.empty_like(stacked)
        out[np.concatenate(order)] = stacked
        return out

    def keys(self) -> list[str]:
        """Every row's key, in row order (one read of each part's rows.bin, not one lookup a row)."""
        return [record["key"] for part in self.parts for record in part_records(self.store, part.name)]

    def record(self, row: int) -> dict:
        part, local = self.locate(row)
        return json.loads(part.rows.get(local))

    def thumbnail(self, row: int) -> bytes:
        part, local = self.locate(row)
        return part.thumbnails.get(local)
