"""A new video or image file as a query: decoded and sampled with the index's own frame rule, encoded with its model.

The rows of an index were made from shards whose frames the builder chose (transcode rate, 1 fps
marks, at most N frames, ``linspace`` when longer, short side S: pipeline/extract.py). A query file
goes through the very same ``extract_video`` with the settings of the build the index was made from
(recorded in index.json as ``build_settings`` by search.index; an index made before that, or from
bare tar URLs, uses the builder's defaults and says so), then through the model's pixel rule
(model/clip_decode.py) and ``encode_video``, so a query clip that is an indexed clip scores as its
row does. A still image is a one-frame clip: ffmpeg decodes it like any input.

The query vector is the model's text-agnostic video vector, searched by cosine with the index's
coarse vectors (searcher.VIDEO_QUERY_NOTE says why a fine stage is not used). Bytes that are not a
video or an image raise ``MediaQueryError`` with the decoder's reason.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from model.clip_decode import decode_clip
from model.frame_rule import FrameRule
from model.trained_model import inference_autocast
from pipeline.extract import DecodeGuards, DecodeLimitError, ExtractionSettings, VideoDecodeError, extract_video
from pipeline.records import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from pipeline.sampling import SlicePosition
from search.decode_limits import QueryDecodeLimits
from search.searcher import Searcher, SearchResult
from shards.sample_format import frame_member

# the build settings that change which frames a clip yields and how they look (ExtractionSettings' fields)
FRAME_SETTINGS = ("transcode_fps", "sample_fps", "short_side", "max_frames", "slice_position", "jpeg_quality", "max_seconds")
QUERY_DECODE_TIMEOUT_S = 120.0  # one query file's ffmpeg call; an upload is size-limited, so this is rarely reached
DEFAULT_RULE_NOTE = "the index does not record its build's frame settings (made before they were recorded): the builder's defaults were used"


class MediaQueryError(ValueError):
    """A query file that cannot be used: the decoder's reason (a 400 on the service), or the limit it
    would pass (``status`` 413: it costs more to decode than the service allows)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def query_extraction_settings(manifest: dict, limits: QueryDecodeLimits | None = None) -> tuple[ExtractionSettings, str | None]:
    """The build's frame settings the index records, as decode settings for one query file (and a note
    when the index records none). Only what changes the frames is taken: transcode rate, sampling
    rate, short side, frame count and slice rule, JPEG quality. ``limits``: a decode for someone else
    (the service) stops at their length and wall time; a file within them yields the same frames."""
    recorded = manifest.get("build_settings") or {}
    values = {name: recorded[name] for name in FRAME_SETTINGS if recorded.get(name) is not None}
    if "slice_position" in values:
        values["slice_position"] = SlicePosition(values["slice_position"])
    timeout_s = QUERY_DECODE_TIMEOUT_S
    if limits is not None:
        values["max_seconds"] = min(values.get("max_seconds") or limits.max_seconds, limits.max_seconds)
        timeout_s = limits.wall_s
    settings = ExtractionSettings(**values, timeout_s=timeout_s, allow_partial=False)
    return settings, None if recorded else DEFAULT_RULE_NOTE


def media_suffix(filename: str | None) -> str:
    """The file's own extension when it is a known video or image one (ffmpeg's image demuxer goes by it), else none."""
    suffix = os.path.splitext(filename or "")[1].lower()
    return suffix if suffix in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS else ""


@torch.no_grad()
def encode_media_file(searcher: Searcher, path: str, name: str | None = None, guards: DecodeGuards | None = None,
                      limits: QueryDecodeLimits | None = None) -> tuple[np.ndarray, dict]:  # fmt: skip
    """(the file's coarse video vector, facts: frames used, seconds spent decoding and encoding, a note).
    ``guards`` and ``limits``: the service's bounds on a decode (search/decode_gate.py); a file past them
    raises MediaQueryError with status 413."""
    manifest = searcher.index.manifest
    settings, note = query_extraction_settings(manifest, limits)
    started = time.perf_counter()
    try:
        extracted = extract_video(path, settings, name=name, guards=guards)
    except DecodeLimitError as error:
        raise MediaQueryError(f"{name or path}: not decoded: {error.reason}", status=413) from None
    except VideoDecodeError as error:
        detail = error.stderr_tail.strip().splitlines()[-1] if error.stderr_tail.strip() else ""
        raise MediaQueryError(f"{name or path}: not a video or image ffmpeg can decode ({error.reason}{': ' + detail if detail else ''})") from None
    decoded = time.perf_counter()
    sample = {frame_member(i): jpeg for i, jpeg in enumerate(extracted.frames_jpeg)}
    rule = FrameRule(manifest["max_frames"], settings.slice_position)
    frames, mask = decode_clip(sample, manifest["max_frames"], manifest["image_size"], rule)
    device = searcher.device
    model = searcher.model
    with inference_autocast(device):
        video = model.encode_video(frames[None].to(device), mask[None].to(device))
        vector = model.coarse_video_vector(video).float()[0].cpu().numpy()
    facts = {"frames": int(mask.sum()), "decode_ms": 1e3 * (decoded - started), "encode_ms": 1e3 * (time.perf_counter() - decoded),
             "duration_s": extracted.source.duration_s, "note": note}  # fmt: skip
    return vector, facts


def search_media_file(searcher: Searcher, path: str, k: int = 10, name: str | None = None, guards: DecodeGuards | None = None,
                      limits: QueryDecodeLimits | None = None) -> SearchResult:  # fmt: skip
    """The top ``k`` for a video or image file (MediaQueryError for bytes ffmpeg cannot decode, or past ``limits``)."""
    vector, facts = encode_media_file(searcher, path, name, guards, limits)
    result = searcher.search_vector(vector, k, f"file {name or os.path.basename(path)}")
    result.milliseconds = {"decode": facts["decode_ms"], "encode": facts["encode_ms"], "coarse": result.milliseconds["coarse"],
                           "fine": 0.0, "total": facts["decode_ms"] + facts["encode_ms"] + result.milliseconds["total"]}  # fmt: skip
    result.note = f"{result.note}; {facts['frames']} frame(s) of the file encoded" + (f"; {facts['note']}" if facts["note"] else "")
    return result
