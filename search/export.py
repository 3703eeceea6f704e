"""``python -m search.export --index INDEX --out FILE``: an index's video vectors and what they stand for, out.

One row per indexed video (or segment): its key, its coarse video vector (the one the first stage of a search
compares with a query; float32), the source video, the time range (segments and windows; the whole clip
otherwise: ``start_s`` 0, ``end_s`` its duration, the decoded length where the header gave none) and its captions (``caption``: the first). ``FILE`` ending
in ``.parquet`` is written with pyarrow, a row group per ``--chunk-rows``; ending in ``.npy``, the vectors go to
it and the rest to a ``.jsonl`` beside it, one line per row in the same order. Either way the index is read
part by part and ``--chunk-rows`` at a time (a memory-mapped slice, or one byte-range read from a bucket), so
memory is bounded by the chunk, not the index: a 1M-video index is exported with a few chunks in memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

import numpy as np

from runtime.cli import HelpFormatter
from search.index_format import IndexFormatError, NpyAppender, VideoIndex, part_records
from shards.storage import StorageError, Store

DEFAULT_CHUNK_ROWS = 65_536


def exported_rows(index: VideoIndex, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[tuple[np.ndarray, list[dict]]]:
    """(vectors float32 (n, D), rows) chunk by chunk, in the index's row order."""
    for part in index.parts:
        records = part_records(index.store, part.name)
        vectors = part.arrays["video"]
        for start in range(0, len(records), chunk_rows):
            stop = min(start + chunk_rows, len(records))
            yield vectors.slice(start, stop).astype(np.float32), [_row(record) for record in records[start:stop]]


def _row(record: dict) -> dict:
    segment = record.get("segment") or {}
    captions = record.get("captions") or []
    return {"key": record["key"], "video": record.get("video_id"), "source_file": record.get("source_file"),
            "start_s": segment.get("start_s", 0.0), "end_s": segment.get("end_s", record.get("duration_s")),
            "caption": captions[0] if captions else None, "captions": captions}  # fmt: skip


def export_parquet(index: VideoIndex, out: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = index.manifest["dim"]
    schema = pa.schema([("key", pa.string()), ("vector", pa.list_(pa.float32(), dim)), ("video", pa.string()), ("source_file", pa.string()),
                        ("start_s", pa.float64()), ("end_s", pa.float64()), ("caption", pa.string()), ("captions", pa.list_(pa.string()))])  # fmt: skip
    written = 0
    store, name = _target(out)
    with store.staged(name) as local, pq.ParquetWriter(local, schema) as writer:
        for vectors, rows in exported_rows(index, chunk_rows):
            columns = {field: [row[field] for row in rows] for field in ("key", "video", "source_file", "start_s", "end_s", "caption", "captions")}
            vector_column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
            writer.write_table(pa.table({"key": columns["key"], "vector": vector_column, **{k: v for k, v in columns.items() if k != "key"}},
                                        schema=schema))  # fmt: skip
            written += len(rows)
    return written


def export_npy(index: VideoIndex, out: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> int:
    """``out`` (.npy, float32 (N, D)) and ``out`` with ``.jsonl`` (one row's fields per line)."""
    store, name = _target(out)
    if not store.is_local:
        raise ValueError(f"{out}: .npy export is written to a local path (Parquet goes to any fsspec URL)")
    appender = NpyAppender(store.path(name), np.dtype(np.float32))
    written = 0
    with open(store.path(name[: -len(".npy")] + ".jsonl"), "w", encoding="utf-8") as lines:
        for vectors, rows in exported_rows(index, chunk_rows):
            appender.append(vectors)
            lines.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            written += len(rows)
    appender.close((index.manifest["dim"],))
    return written


def _target(out: str) -> tuple[Store, str]:
    folder, _, name = out.rstrip("/").rpartition("/")
    store = Store(folder or ".")
    store.ensure_root()
    return store, name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.export", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--index", required=True, help="index folder or fsspec URL (python -m search.index)")
    parser.add_argument("--out", required=True, help="FILE.parquet (any fsspec URL), or FILE.npy (+ FILE.jsonl beside it, local)")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows read and written at a time (bounds memory)")
    args = parser.parse_args(argv)
    if args.chunk_rows < 1 or not args.out.endswith((".parquet", ".npy")):
        parser.error("--out must end in .parquet or .npy, and --chunk-rows be at least 1")
    try:
        index = VideoIndex(args.index)
        writer = export_parquet if args.out.endswith(".parquet") else export_npy
        rows = writer(index, args.out, args.chunk_rows)
    except (FileNotFoundError, IndexFormatError, StorageError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"exported {rows:,} rows of {args.index} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
