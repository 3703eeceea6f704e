"""Annotation adapters: the dataset releases users already have -> one list of VideoRecords.

Supported, in their published formats:
- MSR-VTT as released with CLIP4Clip: ``MSRVTT_data.json`` (``videos`` + ``sentences``) with
  an optional split CSV (``MSRVTT_train.9k.csv``, ``MSRVTT_train.7k.csv``: column video_id;
  ``MSRVTT_JSFUSION_test.csv``: key, vid_key, video_id, sentence). The JSFUSION CSV alone is
  enough for the 1k-A test split: its one sentence per video is the standard query.
- MSVD: ``raw-captions.pkl`` (video id -> list of token lists) with ``*_list.txt`` splits.
- Generic CSV (columns video + caption [+ split]; repeated rows add captions) or JSONL
  (``{"video": ..., "captions": [...] | "caption": ..., "split": ...}``).

The order of records is the order of the annotation file; shard contents depend on it, so
it must not depend on directory listing order or hashing.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

# Containers an id is looked up with (``video7020`` -> ``video7020.<any of these>``): phones,
# camcorders (AVCHD .mts/.m2ts), DVD (.vob), broadcast (.mxf), web (.ogv/.webm/.flv), old PCs.
VIDEO_EXTENSIONS = (
    *(".mp4", ".m4v", ".mov", ".qt", ".avi", ".divx", ".webm", ".mkv", ".gif", ".flv", ".f4v", ".wmv", ".asf"),
    *(".mpg", ".mpeg", ".m1v", ".m2v", ".ts", ".mts", ".m2ts", ".vob", ".mod", ".tod", ".mxf", ".dv"),
    *(".3gp", ".3g2", ".ogv", ".ogg", ".rm", ".rmvb", ".nut", ".y4m", ".h264", ".264", ".hevc", ".h265", ".mjpeg"),
)
# A still image is a one-frame clip; it is found when the annotation names the file itself.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class AnnotationError(ValueError):
    """The annotation file itself is unusable; names the file (and line where it helps)."""


@dataclass
class VideoRecord:
    video_id: str
    reference: str  # what the annotation said (id or relative path), kept for failure reports
    captions: list[str]
    split: str | None = None
    path: str | None = None  # resolved file, None when it is not under the videos folder
    problem: str | None = None  # why path is None
    missing: bool = False  # the problem is only that no file exists (what --ignore-missing may drop)
    extra: dict = field(default_factory=dict)


# Invisible noise removed from captions: bidi embeddings/overrides/isolates and marks, BOM,
# soft hyphen, zero-width space, word joiner, invisible operators, interlinear annotation.
# Every other format character stays: the zero-width joiner and non-joiner (U+200D/U+200C)
# build emoji sequences and spell Persian and Hindi words, tag characters spell flag emoji.
_INVISIBLE_NOISE = frozenset(
    "\u00ad\u061c\u180e\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064"
    "\u2066\u2067\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f\ufeff\ufff9\ufffa\ufffb"
)


def _visible(ch: str) -> bool:
    if ch in "\t\n\r":
        return True  # whitespace, collapsed below
    category = unicodedata.category(ch)
    return category not in ("Cc", "Cs") and ch not in _INVISIBLE_NOISE  # control, lone surrogates


def clean_captions(captions: Iterable[object]) -> list[str]:
    """NFC-normalises, removes control characters and invisible noise, collapses whitespace,
    and drops captions left empty or not strings (they train nothing). Accents, CJK, emoji
    sequences and joiners stay."""
    cleaned = []
    for caption in captions:
        if not isinstance(caption, str):
            continue
        visible = "".join(ch for ch in unicodedata.normalize("NFC", caption) if _visible(ch))
        text = " ".join(visible.split())
        if text:
            cleaned.append(text)
    return cleaned


class _PlainDataUnpickler(pickle.Unpickler):
    """MSVD's captions pickle holds only dicts, lists and strings; refusing every class
    lookup means a crafted file cannot run code while it is read."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain dicts, lists and strings are expected")


def _read_csv_rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise AnnotationError(f"{path}: empty CSV (no header row)")
        rows = list(reader)
    if not rows:
        raise AnnotationError(f"{path}: CSV has a header but no rows")
    return rows


def _read_id_list(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        ids = [line.strip() for line in handle if line.strip()]
    if not ids:
        raise AnnotationError(f"{path}: split list is empty")
    return ids


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
    split_name = split or _split_from_filename(split_csv)
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


def _split_from_filename(path: str) -> str | None:
    name = os.path.basename(path).lower()
    for split in ("train", "val", "test"):
        if split in name:
            return split
    return None


def load_msvd(captions_pkl: str, split_list: str | None, split: str | None) -> list[VideoRecord]:
    """MSVD: every caption of a video is kept (all are queries in multi-sentence eval)."""
    try:
        with open(captions_pkl, "rb") as handle:
            raw = _PlainDataUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError) as error:
        raise AnnotationError(f"{captions_pkl}: not a pickle file ({error!r})") from error
    if not isinstance(raw, dict):
        raise AnnotationError(f"{captions_pkl}: expected a dict video_id -> captions")
    ids = _read_id_list(split_list) if split_list else sorted(raw)
    split_name = split or (_split_from_filename(split_list) if split_list else None)
    records = []
    for video_id in ids:
        if video_id not in raw:
            raise AnnotationError(f"{split_list}: video {video_id!r} has no captions in {captions_pkl}")
        captions = [c if isinstance(c, str) else " ".join(c) for c in raw[video_id]]
        records.append(VideoRecord(video_id=video_id, reference=video_id, captions=clean_captions(captions), split=split_name))
    return records


_VIDEO_COLUMNS = ("video", "video_id", "path", "video_path")
_CAPTION_COLUMNS = ("caption", "sentence", "text", "captions")


def _pick(row: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in row:
            return name
    return None


def _strip_media_extension(name: str) -> str:
    """``clip.mp4`` -> ``clip``, but ``party.2019`` stays: a dot inside an id is not an extension."""
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS else name


def _group(entries: Iterable[tuple[str, list[str], str | None]]) -> list[VideoRecord]:
    records: dict[str, VideoRecord] = {}
    for reference, captions, split in entries:
        record = records.get(reference)
        if record is None:
            video_id = _strip_media_extension(os.path.basename(reference)) or reference
            record = records[reference] = VideoRecord(video_id=video_id, reference=reference, captions=[], split=split)
        record.captions.extend(clean_captions(captions))
    return list(records.values())


def load_generic_csv(path: str, split: str | None) -> list[VideoRecord]:
    rows = _read_csv_rows(path)
    video_col, caption_col = _pick(rows[0], _VIDEO_COLUMNS), _pick(rows[0], _CAPTION_COLUMNS)
    if video_col is None or caption_col is None:
        raise AnnotationError(
            f"{path}: needs a video column {_VIDEO_COLUMNS} and a caption column {_CAPTION_COLUMNS}, found {list(rows[0])}"
        )
    entries = []
    for line, row in enumerate(rows, start=2):
        reference = (row.get(video_col) or "").strip()
        if not reference:
            raise AnnotationError(f"{path}:{line}: empty video field")
        entries.append((reference, [row.get(caption_col) or ""], split or row.get("split") or None))
    return _group(entries)


def load_jsonl(path: str, split: str | None) -> list[VideoRecord]:
    entries = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise AnnotationError(f"{path}:{line_number}: invalid JSON ({error.msg})") from error
            if not isinstance(item, dict):
                raise AnnotationError(f"{path}:{line_number}: expected an object")
            video_key = _pick(item, _VIDEO_COLUMNS)
            if video_key is None or not str(item[video_key]).strip():
                raise AnnotationError(f"{path}:{line_number}: no video field {_VIDEO_COLUMNS}")
            captions = item.get("captions", item.get("caption", item.get("sentence", [])))
            if isinstance(captions, str):
                captions = [captions]
            entries.append((str(item[video_key]).strip(), list(captions), split or item.get("split")))
    if not entries:
        raise AnnotationError(f"{path}: no annotations")
    return _group(entries)


def detect_format(path: str) -> str:
    """Guesses the adapter from the file so the common cases need no ``--format``."""
    name = os.path.basename(path).lower()
    if name.endswith(".pkl"):
        return "msvd"
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".json"):
        return "msrvtt"
    if name.endswith(".csv"):
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
        if "video_id" in header and ("sentence" in header or len(header) == 1):
            return "msrvtt"
        return "csv"
    raise AnnotationError(f"{path}: cannot tell the annotation format; pass --format")


def load_annotations(path: str, fmt: str = "auto", split_file: str | None = None, split: str | None = None) -> list[VideoRecord]:
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
    elif fmt == "csv":
        records = load_generic_csv(path, split)
    elif fmt == "jsonl":
        records = load_jsonl(path, split)
    else:
        raise AnnotationError(f"unknown annotation format {fmt!r}")
    if not records:
        raise AnnotationError(f"{path}: no videos selected (split={split!r})")
    return records


def _nfc(text: str) -> str:
    """macOS writes file names decomposed (e + combining accent); annotations are usually
    composed. Both sides are compared in NFC."""
    return unicodedata.normalize("NFC", text)


class VideoIndex:
    """Resolves an annotation's video reference to a file under the videos folder.

    A reference is tried, in order, as a path relative to the folder (``sub/clip.mp4``, or
    ``clip.mp4`` anywhere below it), then as an id matched on the file stem with any video
    extension (``video7020``, ``party.2019``). Names compare in NFC. An id that matches more
    than one file is refused with both names: picking one silently would pair captions with
    whichever the directory listing gave first. A path that resolves outside the folder is
    refused: annotation files come from elsewhere and must not make the builder read
    arbitrary files.
    """

    def __init__(self, root: str) -> None:
        if not os.path.isdir(root):
            raise AnnotationError(f"{root}: videos folder not found")
        self.root = os.path.realpath(root)
        self._by_stem: dict[str, list[str]] = {}
        self._by_name: dict[str, list[str]] = {}
        self._by_relative: dict[str, str] = {}
        for directory, _, files in sorted(os.walk(self.root)):
            for name in sorted(files):
                path = os.path.join(directory, name)
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
                    self._by_relative[_nfc(os.path.relpath(path, self.root))] = path
                    self._by_name.setdefault(_nfc(name), []).append(path)
                if ext.lower() in VIDEO_EXTENSIONS:
                    self._by_stem.setdefault(_nfc(stem), []).append(path)

    def _relative(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def _one(self, record: VideoRecord, matches: list[str], what: str) -> VideoRecord:
        matches = list(dict.fromkeys(os.path.realpath(m) for m in matches))  # a link to the same file is one file
        if len(matches) == 1:
            record.path = matches[0]
        else:
            names = ", ".join(repr(self._relative(m)) for m in matches)
            record.problem = f"{what} {record.reference!r} matches {len(matches)} files: {names}; name the file in the annotation"
        return record

    def resolve(self, record: VideoRecord) -> VideoRecord:
        reference = record.reference
        candidate = os.path.realpath(os.path.join(self.root, reference))
        if os.path.commonpath([candidate, self.root]) != self.root:
            record.problem = f"path escapes the videos folder: {reference!r}"
            return record
        if os.path.isfile(candidate):
            record.path = candidate
            return record
        relative = _nfc(os.path.normpath(reference))
        if relative in self._by_relative:
            record.path = self._by_relative[relative]
            return record
        if "/" not in reference and os.sep not in reference:
            if _nfc(reference) in self._by_name:  # "clip.mp4" in a sub-folder
                return self._one(record, self._by_name[_nfc(reference)], "file name")
            if _nfc(reference) in self._by_stem:
                return self._one(record, self._by_stem[_nfc(reference)], "id")
            record.problem = f"no video file named {reference!r} or {reference!r}.* under {self.root}"
        else:
            record.problem = f"video file not found: {reference!r}"
        record.missing = True
        return record
