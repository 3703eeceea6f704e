"""Annotation adapters: the dataset releases users already have -> one list of VideoRecords.

Supported, in their published formats:
- MSR-VTT as released with CLIP4Clip: ``MSRVTT_data.json`` (``videos`` + ``sentences``) with
  an optional split CSV (``MSRVTT_train.9k.csv``, ``MSRVTT_train.7k.csv``: column video_id;
  ``MSRVTT_JSFUSION_test.csv``: key, vid_key, video_id, sentence). The JSFUSION CSV alone is
  enough for the 1k-A test split: its one sentence per video is the standard query.
- MSVD: ``raw-captions.pkl`` (video id -> list of token lists) with ``*_list.txt`` splits.
- LSMDC, ActivityNet Captions, DiDeMo and VATEX in their published layouts
  (``pipeline/benchmark_datasets.py``).
- Generic tables: CSV, TSV or Parquet (columns video + caption [+ split, start, end]; repeated
  rows add captions; ``Columns`` names other columns) or JSONL
  (``{"video": ..., "captions": [...] | "caption": ..., "split": ..., "start": s, "end": s}``).
  ``start``/``end`` (seconds) make a segment: the builder decodes only that span, and each
  segment is its own sample.

The order of records is the order of the annotation file; shard contents depend on it, so
it must not depend on directory listing order or hashing.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline import benchmark_datasets as benchmarks
from pipeline.records import (  # noqa: F401 - VideoRecord, AnnotationError, clean_captions: this module's public names
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    AnnotationError,
    VideoRecord,
    clean_captions,
    read_id_list,
    split_from_filename,
)


class _PlainDataUnpickler(pickle.Unpickler):
    """MSVD's captions pickle holds only dicts, lists and strings; refusing every class
    lookup means a crafted file cannot run code while it is read."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain dicts, lists and strings are expected")


def _read_csv_rows(path: str, delimiter: str = ",") -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if not reader.fieldnames:
            raise AnnotationError(f"{path}: empty table (no header row)")
        rows = list(reader)
    if not rows:
        raise AnnotationError(f"{path}: table has a header but no rows")
    return rows


def load_msrvtt(data_json: str | None, split_csv: str | None, split: str | None) -> list[VideoRecord]:
    """MSR-VTT in CLIP4Clip's release. Captions come from the JSFUSION CSV when it has them
    (the 1k-A protocol: one query per video), otherwise all of the video's sentences."""
    if data_json is None and split_csv is None:
        raise AnnotationError("MSR-VTT needs MSRVTT_data.json and/or a split CSV")
    sentences: dict[str, list[str]] = {}
    json_split: dict[str, str] = {}
    json_order: list[str] = []
    if data_json is not None:
        try:
            with open(data_json, encoding="utf-8") as handle:
                data = json.load(handle)
            videos, all_sentences = data["videos"], data["sentences"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise AnnotationError(f"{data_json}: not an MSR-VTT data file ({error!r})") from error
        for video in videos:
            json_order.append(video["video_id"])
            json_split[video["video_id"]] = video.get("split")
        for sentence in all_sentences:
            sentences.setdefault(sentence["video_id"], []).append(sentence["caption"])
    if split_csv is None:
        ids = [v for v in json_order if split is None or json_split.get(v) == split]
        return [VideoRecord(video_id=v, reference=v, captions=clean_captions(sentences.get(v, [])), split=json_split.get(v)) for v in ids]
    rows = _read_csv_rows(split_csv)
    if "video_id" not in rows[0]:
        raise AnnotationError(f"{split_csv}: expected a video_id column, found {list(rows[0])}")
    split_name = split or split_from_filename(split_csv)
    records: dict[str, VideoRecord] = {}
    for row in rows:
        video_id = row["video_id"].strip()
        record = records.get(video_id)
        if record is None:
            record = records[video_id] = VideoRecord(video_id=video_id, reference=video_id, captions=[], split=split_name)
        if row.get("sentence") is not None:
            record.captions.extend(clean_captions([row["sentence"]]))
    for record in records.values():
        if not record.captions:
            if data_json is None:
                raise AnnotationError(f"{split_csv}: has no sentence column; pass MSRVTT_data.json for captions")
            record.captions = clean_captions(sentences.get(record.video_id, []))
    return list(records.values())


def load_msvd(captions_pkl: str, split_list: str | None, split: str | None) -> list[VideoRecord]:
    """MSVD: every caption of a video is kept (all are queries in multi-sentence eval)."""
    try:
        with open(captions_pkl, "rb") as handle:
            raw = _PlainDataUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError) as error:
        raise AnnotationError(f"{captions_pkl}: not a pickle file ({error!r})") from error
    if not isinstance(raw, dict):
        raise AnnotationError(f"{captions_pkl}: expected a dict video_id -> captions")
    ids = read_id_list(split_list) if split_list else sorted(raw)
    split_name = split or (split_from_filename(split_list) if split_list else None)
    records = []
    for video_id in ids:
        if video_id not in raw:
            raise AnnotationError(f"{split_list}: video {video_id!r} has no captions in {captions_pkl}")
        captions = [c if isinstance(c, str) else " ".join(c) for c in raw[video_id]]
        records.append(VideoRecord(video_id=video_id, reference=video_id, captions=clean_captions(captions), split=split_name))
    return records


_VIDEO_COLUMNS = ("video", "video_id", "path", "video_path", "url", "videoID")
_CAPTION_COLUMNS = ("caption", "sentence", "text", "captions", "description")
_START_COLUMNS = ("start", "start_s", "start_time", "timestamp_start")
_END_COLUMNS = ("end", "end_s", "end_time", "timestamp_end")


@dataclass(frozen=True)
class Columns:
    """Which columns of a generic table hold what; None picks the first known name."""

    video: str | None = None
    caption: str | None = None
    split: str | None = None
    start: str | None = None
    end: str | None = None


def _pick(row: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in row:
            return name
    return None


def _strip_media_extension(name: str) -> str:
    """``clip.mp4`` -> ``clip``, but ``party.2019`` stays: a dot inside an id is not an extension."""
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS else name


def _seconds(value: object, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as error:
        raise AnnotationError(f"{where}: {value!r} is not a number of seconds") from error
    if seconds != seconds or seconds < 0:
        raise AnnotationError(f"{where}: {value!r} is not a number of seconds >= 0")
    return seconds


@dataclass
class _Entry:
    reference: str
    captions: list
    split: str | None
    start_s: float | None = None
    end_s: float | None = None


def _segment_id(video_id: str, start_s: float | None, end_s: float | None) -> str:
    if start_s is None and end_s is None:
        return video_id
    return f"{video_id}_{start_s or 0:g}-{'end' if end_s is None else f'{end_s:g}'}"


def _group(entries: Iterable[_Entry]) -> list[VideoRecord]:
    """One record per (file, segment); repeated rows add captions."""
    records: dict[tuple, VideoRecord] = {}
    for entry in entries:
        if entry.start_s is not None and entry.end_s is not None and entry.end_s <= entry.start_s:
            raise AnnotationError(f"{entry.reference}: segment end {entry.end_s:g} s is not after its start {entry.start_s:g} s")
        group = (entry.reference, entry.start_s, entry.end_s)
        record = records.get(group)
        if record is None:
            base = _strip_media_extension(os.path.basename(entry.reference.rstrip("/"))) or entry.reference
            record = records[group] = VideoRecord(
                video_id=_segment_id(base, entry.start_s, entry.end_s),
                reference=entry.reference,
                captions=[],
                split=entry.split,
                start_s=entry.start_s,
                end_s=entry.end_s,
            )
        record.captions.extend(clean_captions(entry.captions))
    return list(records.values())


def _table_rows(path: str) -> list[dict]:
    """Rows of a CSV, TSV or Parquet annotation list, as dicts."""
    lower = path.lower()
    if lower.endswith(".parquet"):
        import pyarrow.parquet  # only parquet users pay for the import

        try:
            rows = pyarrow.parquet.read_table(path).to_pylist()
        except Exception as error:  # noqa: BLE001 - pyarrow raises its own hierarchy
            raise AnnotationError(f"{path}: not a readable Parquet file ({error})") from error
        if not rows:
            raise AnnotationError(f"{path}: Parquet file has no rows")
        return rows
    return _read_csv_rows(path, delimiter="\t" if lower.endswith(".tsv") else ",")


def _column(row: dict, chosen: str | None, names: tuple[str, ...], path: str, required: bool, what: str) -> str | None:
    if chosen is not None:
        if chosen not in row:
            raise AnnotationError(f"{path}: no column {chosen!r} for the {what}; columns are {list(row)}")
        return chosen
    found = _pick(row, names)
    if found is None and required:
        raise AnnotationError(f"{path}: needs a {what} column {names} (or name it), found {list(row)}")
    return found


def load_table(path: str, split: str | None, columns: Columns = Columns()) -> list[VideoRecord]:
    """Generic CSV/TSV/Parquet list; a caption cell may hold one caption or a list of them."""
    rows = _table_rows(path)
    first = rows[0]
    video_col = _column(first, columns.video, _VIDEO_COLUMNS, path, True, "video")
    caption_col = _column(first, columns.caption, _CAPTION_COLUMNS, path, True, "caption")
    split_col = _column(first, columns.split, ("split",), path, False, "split")
    start_col = _column(first, columns.start, _START_COLUMNS, path, False, "start")
    end_col = _column(first, columns.end, _END_COLUMNS, path, False, "end")
    entries = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        reference = str(row.get(video_col) or "").strip()
        if not reference:
            raise AnnotationError(f"{where}: empty video field")
        captions = row.get(caption_col)
        captions = list(captions) if isinstance(captions, list | tuple) else [captions or ""]
        entries.append(
            _Entry(
                reference,
                captions,
                split or (row.get(split_col) if split_col else None) or None,
                _seconds(row.get(start_col), where) if start_col else None,
                _seconds(row.get(end_col), where) if end_col else None,
            )
        )
    return _group(entries)


def load_jsonl(path: str, split: str | None, columns: Columns = Columns()) -> list[VideoRecord]:
    entries = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise AnnotationError(f"{where}: invalid JSON ({error.msg})") from error
            if not isinstance(item, dict):
                raise AnnotationError(f"{where}: expected an object")
            video_key = columns.video or _pick(item, _VIDEO_COLUMNS)
            if video_key is None or not str(item.get(video_key, "")).strip():
                raise AnnotationError(f"{where}: no video field {(columns.video,) if columns.video else _VIDEO_COLUMNS}")
            caption_key = columns.caption or _pick(item, _CAPTION_COLUMNS)
            captions = item.get(caption_key, []) if caption_key else []
            if isinstance(captions, str):
                captions = [captions]
            start_key = columns.start or _pick(item, _START_COLUMNS)
            end_key = columns.end or _pick(item, _END_COLUMNS)
            entries.append(
                _Entry(
                    str(item[video_key]).strip(),
                    list(captions),
                    split or item.get(columns.split or "split"),
                    _seconds(item.get(start_key), where) if start_key else None,
                    _seconds(item.get(end_key), where) if end_key else None,
                )
            )
    if not entries:
        raise AnnotationError(f"{path}: no annotations")
    return _group(entries)


FORMATS = ("auto", "msrvtt", "msvd", "lsmdc", "activitynet", "didemo", "vatex", "csv", "tsv", "parquet", "jsonl")


def detect_format(path: str) -> str:
    """Recognises each layout from the file (name, then content) so ``--format auto`` works."""
    name = os.path.basename(path).lower()
    if name.endswith(".pkl"):
        return "msvd"
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith(".json"):
        found = benchmarks.sniff_json(path)
        if found is None:
            raise AnnotationError(f"{path}: a JSON file in none of the known layouts (MSR-VTT, ActivityNet, DiDeMo, VATEX); pass --format")
        return found
    if name.endswith(".csv"):
        if name.startswith("lsmdc") or benchmarks.sniff_lsmdc(path):
            return "lsmdc"
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        if "video_id" in header and ("sentence" in header or len(header) == 1):
            return "msrvtt"
        return "csv"
    raise AnnotationError(f"{path}: cannot tell the annotation format; pass --format")


def load_annotations(
    path: str, fmt: str = "auto", split_file: str | None = None, split: str | None = None, columns: Columns = Columns()
) -> list[VideoRecord]:
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: annotation file not found")
    if split_file is not None and not os.path.isfile(split_file):
        raise AnnotationError(f"{split_file}: split file not found")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "msrvtt":
        if path.lower().endswith(".csv"):
            records = load_msrvtt(None, path, split)
        else:
            records = load_msrvtt(path, split_file, split)
    elif fmt == "msvd":
        records = load_msvd(path, split_file, split)
    elif fmt == "lsmdc":
        records = benchmarks.load_lsmdc(path, split)
    elif fmt == "activitynet":
        records = benchmarks.load_activitynet(path, split_file, split)
    elif fmt == "didemo":
        records = benchmarks.load_didemo(path, split_file, split)
    elif fmt == "vatex":
        records = benchmarks.load_vatex(path, split)
    elif fmt in ("csv", "tsv", "parquet"):
        records = load_table(path, split, columns)
    elif fmt == "jsonl":
        records = load_jsonl(path, split, columns)
    else:
        raise AnnotationError(f"unknown annotation format {fmt!r}")
    if not records:
        raise AnnotationError(f"{path}: no videos selected (split={split!r})")
    return records
