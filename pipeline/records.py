"""What an annotation says about one video (or one segment of it), whatever the dataset."""

from __future__ import annotations

import os
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
    start_s: float | None = None  # a segment of the file: decode only [start_s, end_s)
    end_s: float | None = None
    # other (reference, start_s, end_s) to try when ``reference`` is not found: ActivityNet's
    # ids without "v_", a VATEX clip's YouTube video cut by the clip's seconds
    fallbacks: list[tuple[str, float | None, float | None]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # stored in the sample JSON (e.g. per-sentence timestamps)

    @property
    def span(self) -> tuple[float, float | None] | None:
        if self.start_s is None and self.end_s is None:
            return None
        return (self.start_s or 0.0, self.end_s)


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


def split_from_filename(path: str) -> str | None:
    name = os.path.basename(path).lower()
    for split in ("train", "val", "test"):
        if split in name:
            return split
    return None


def read_id_list(path: str) -> list[str]:
    """A split file with one video id (or file name) per line."""
    with open(path, encoding="utf-8") as handle:
        ids = [line.strip() for line in handle if line.strip()]
    if not ids:
        raise AnnotationError(f"{path}: split list is empty")
    return ids
