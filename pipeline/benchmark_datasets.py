"""LSMDC, ActivityNet Captions, DiDeMo and VATEX in the layouts their releases use.

Each reader follows CLIP4Clip's ``dataloaders/dataloader_*_retrieval.py`` (and VATEX's own
release) for what a sample is:

- LSMDC (``LSMDC16_annos_training.csv``, ``..._val.csv``, ``LSMDC16_challenge_1000_publictect.csv``):
  six tab-separated fields per line, clip id, start/end aligned, start/end extracted, sentence.
  A clip id repeats once per sentence (one sample with all of them); the file is the clip id
  plus an extension in any per-movie folder.
- ActivityNet Captions (``train.json`` / ``val_1.json`` with ``train_ids.json`` / ``val_ids.json``)
  and DiDeMo (``{train,val,test}_data.json`` with ``{train,val,test}_list.txt``) are
  *paragraph-to-video*: all sentences of a video are joined with spaces into one query, in the
  json's order, as the reference code does (for DiDeMo that is not always time order; README
  says so). ActivityNet's target is the whole video; DiDeMo's is seconds 0-31 (its annotation
  truncated longer videos to 30 s). Per-sentence times are kept under ``sentences`` so
  segment-level retrieval can be built from the same shards.
- VATEX (``vatex_training_v1.0.json``, ``vatex_validation_v1.0.json``, ``vatex_public_test_english_v1.1.json``):
  ``videoID`` is ``<youtube id>_<start:06d>_<end:06d>``, ten English captions in ``enCap``.
  The clip file is looked up by ``videoID``; failing that, the YouTube video by its id, cut
  to the clip's seconds.
"""

from __future__ import annotations

import json
import os
from typing import Any

from pipeline.records import AnnotationError, VideoRecord, clean_captions, read_id_list, split_from_filename


def _load_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}: invalid JSON ({error.msg} at line {error.lineno})") from error


def _id_list(path: str | None) -> list[str] | None:
    """A split file: a JSON list (ActivityNet's ``*_ids.json``) or one id per line."""
    if path is None:
        return None
    if path.lower().endswith(".json"):
        ids = _load_json(path)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise AnnotationError(f"{path}: expected a JSON list of video ids")
        return ids
    return read_id_list(path)


def load_lsmdc(path: str, split: str | None) -> list[VideoRecord]:
    name = os.path.basename(path).lower()
    split_name = split or (
        "test" if "publictect" in name or "test" in name else "train" if "training" in name else split_from_filename(path)
    )
    records: dict[str, VideoRecord] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 6:
                raise AnnotationError(f"{path}:{number}: expected 6 tab-separated fields (clip id, 4 times, sentence), found {len(fields)}")
            clip_id, start_aligned, end_aligned, start_extracted, end_extracted = (f.strip() for f in fields[:5])
            sentence = "\t".join(fields[5:])  # a stray tab inside a sentence stays in it
            record = records.get(clip_id)
            if record is None:
                record = records[clip_id] = VideoRecord(
                    video_id=clip_id,
                    reference=clip_id,
                    captions=[],
                    split=split_name,
                    extra={"lsmdc_times": {"aligned": [start_aligned, end_aligned], "extracted": [start_extracted, end_extracted]}},
                )
            record.captions.extend(clean_captions([sentence]))
    if not records:
        raise AnnotationError(f"{path}: no LSMDC lines")
    return list(records.values())


def load_activitynet(path: str, split_file: str | None, split: str | None) -> list[VideoRecord]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected ActivityNet Captions' {{video id: {{duration, timestamps, sentences}}}}")
    ids = _id_list(split_file) or list(data)
    name = os.path.basename(path).lower()
    split_name = split or ("test" if name.startswith("val_1") else "val" if name.startswith("val_2") else split_from_filename(path))
    records = []
    for pseudo_id in ids:
        video = data.get(pseudo_id)
        if video is None:
            continue  # CLIP4Clip skips ids without captions the same way
        try:
            sentences, timestamps, duration = video["sentences"], video["timestamps"], float(video["duration"])
        except (KeyError, TypeError, ValueError) as error:
            raise AnnotationError(f"{path}: video {pseudo_id!r} lacks duration/timestamps/sentences ({error!r})") from error
        timed = [(clean_captions([text]), t) for text, t in zip(sentences, timestamps, strict=False)]
        timed = [(cleaned[0], t) for cleaned, t in timed if cleaned]
        texts = [text for text, _ in timed]
        stripped = pseudo_id[2:] if pseudo_id.startswith("v_") else pseudo_id
        records.append(
            VideoRecord(
                video_id=pseudo_id,
                reference=stripped,  # CLIP4Clip matches files by the id without "v_"
                fallbacks=[(pseudo_id, None, None)],  # other distributions keep it
                captions=[" ".join(texts)] if texts else [],
                split=split_name,
                extra={
                    "duration_s": duration,
                    "sentences": [{"text": text, "start_s": float(t[0]), "end_s": float(t[1])} for text, t in timed],
                },
            )
        )
    return records


DIDEMO_END_S = 31.0  # CLIP4Clip's end for every DiDeMo video: annotations stop at 30 s


def load_didemo(path: str, split_file: str | None, split: str | None) -> list[VideoRecord]:
    data = _load_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected DiDeMo's list of {{video, description, times}}")
    allowed = set(_id_list(split_file)) if split_file else None
    split_name = split or split_from_filename(path)
    records: dict[str, VideoRecord] = {}
    for number, item in enumerate(data):
        try:
            video, description, times = item["video"], item["description"], item["times"]
        except (KeyError, TypeError) as error:
            raise AnnotationError(f"{path}: entry {number} lacks video/description/times ({error!r})") from error
        if allowed is not None and video not in allowed:
            continue
        record = records.get(video)
        if record is None:
            record = records[video] = VideoRecord(
                video_id=video, reference=video, captions=[], split=split_name, start_s=0.0, end_s=DIDEMO_END_S, extra={"sentences": []}
            )
        # each video is split into 5-second chunks; the annotators' points are averaged
        start = sum(t[0] for t in times) / len(times) * 5
        end = (sum(t[1] for t in times) / len(times) + 1) * 5
        for text in clean_captions([description]):
            record.extra["sentences"].append({"text": text, "start_s": start, "end_s": end})
    for record in records.values():
        texts = [s["text"] for s in record.extra["sentences"]]
        record.captions = [" ".join(texts)] if texts else []  # the json's order, as CLIP4Clip joins them
    return list(records.values())


def vatex_clip_span(video_id: str) -> tuple[str, float, float] | None:
    """``Ptf_2VRj-V0_000122_000132`` -> (``Ptf_2VRj-V0``, 122, 132); None if not in that form."""
    parts = video_id.rsplit("_", 2)
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return parts[0], float(parts[1]), float(parts[2])


def load_vatex(path: str, split: str | None) -> list[VideoRecord]:
    data = _load_json(path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected VATEX's list of {{videoID, enCap}}")
    name = os.path.basename(path).lower()
    split_name = split or ("train" if "training" in name else "val" if "validation" in name else split_from_filename(path))
    records = []
    for number, item in enumerate(data):
        if not isinstance(item, dict) or "videoID" not in item:
            raise AnnotationError(f"{path}: entry {number} has no videoID")
        video_id = item["videoID"]
        span = vatex_clip_span(video_id)
        records.append(
            VideoRecord(
                video_id=video_id,
                reference=video_id,
                fallbacks=[span] if span else [],
                captions=clean_captions(item.get("enCap", [])),
                split=split_name,
            )
        )
    return records


def sniff_json(path: str) -> str | None:
    """Which benchmark a .json annotation file is, from its structure."""
    data = _load_json(path)
    if isinstance(data, dict) and "videos" in data and "sentences" in data:
        return "msrvtt"
    if isinstance(data, dict) and data:
        first = next(iter(data.values()))
        if isinstance(first, dict) and "sentences" in first and "timestamps" in first:
            return "activitynet"
    if isinstance(data, list) and data and isinstance(data[0], dict):
        if {"video", "description", "times"} <= set(data[0]):
            return "didemo"
        if "videoID" in data[0]:
            return "vatex"
    return None


def sniff_lsmdc(path: str) -> bool:
    with open(path, encoding="utf-8-sig") as handle:
        first = handle.readline()
    return first.count("\t") >= 5
