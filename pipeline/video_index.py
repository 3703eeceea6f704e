"""Where an annotation's video is: a file under the videos folder, or an object in a bucket.

``--videos`` is a local folder or any listable fsspec URL (``s3://bucket/raw/``); an
annotation may also give a full ``https://`` or ``s3://`` URL, which is used as it is. A
reference is tried, in order, as a path relative to the root (``sub/clip.mp4``, or
``clip.mp4`` anywhere below it), then as an id matched on the file stem with any video
extension (``video7020``, ``party.2019``), then as each of the record's fallbacks
(ActivityNet's id with ``v_``, a VATEX clip's YouTube video cut to the clip). Names compare in
NFC. An id that matches more than one file is refused with both names: picking one silently
would pair captions with whichever the listing gave first. A path that resolves outside the
root is refused: annotation files come from elsewhere and must not make the builder read
arbitrary local files.
"""

from __future__ import annotations

import os
import posixpath
import re
import unicodedata

from pipeline.records import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, AnnotationError, VideoRecord

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str) -> bool:
    """``s3://b/x.mp4``, ``https://host/x.mp4``: anything fsspec (or ffmpeg) opens by URL."""
    return bool(_URL.match(location))


def _nfc(text: str) -> str:
    """macOS writes file names decomposed (e + combining accent); annotations are usually
    composed. Both sides are compared in NFC."""
    return unicodedata.normalize("NFC", text)


def _is_media(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS


class VideoIndex:
    """Resolves VideoRecords against one root (see the module docstring)."""

    def __init__(self, root: str) -> None:
        self.remote = is_url(root)
        self.root = root.rstrip("/") if self.remote else os.path.realpath(root)
        self.listable = True
        relative_paths: list[str] = []
        if not self.remote:
            if not os.path.isdir(root):
                raise AnnotationError(f"{root}: videos folder not found")
            for directory, _, files in sorted(os.walk(self.root)):
                relative_paths += [os.path.relpath(os.path.join(directory, name), self.root) for name in sorted(files)]
        elif root.startswith(("http://", "https://")):
            self.listable = False  # a web server has no listing: references must name files
        else:
            relative_paths = self._list_remote(root)
        self._by_stem: dict[str, list[str]] = {}
        self._by_name: dict[str, list[str]] = {}
        self._by_relative: dict[str, str] = {}
        for relative in relative_paths:
            name = posixpath.basename(relative.replace(os.sep, "/"))
            if not _is_media(name):
                continue
            location = self._location(relative)
            self._by_relative[_nfc(relative.replace(os.sep, "/"))] = location
            self._by_name.setdefault(_nfc(name), []).append(location)
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                self._by_stem.setdefault(_nfc(stem), []).append(location)

    def relative_paths(self) -> list[str]:
        """Every video or image file found under the root, relative to it (empty for a web server: no listing)."""
        return list(self._by_relative)

    def _list_remote(self, root: str) -> list[str]:
        import fsspec

        from shards.storage_errors import StorageError

        try:
            fs, path = fsspec.core.url_to_fs(root)
            found = fs.find(path)
        except Exception as error:  # noqa: BLE001 - fsspec backends raise their own errors
            raise StorageError(f"{root}: cannot list the videos ({type(error).__name__}: {error})") from error
        if not found:
            raise AnnotationError(f"{root}: no objects under this videos URL")
        prefix = path.rstrip("/") + "/"
        return sorted(f[len(prefix) :] for f in found if f.startswith(prefix))

    def _location(self, relative: str) -> str:
        if self.remote:
            return f"{self.root}/{relative}"
        return os.path.join(self.root, relative)

    def _display(self, location: str) -> str:
        return location[len(self.root) + 1 :] if location.startswith(self.root) else location

    def resolve(self, record: VideoRecord) -> VideoRecord:
        first = self._lookup(record.reference)
        if first[0] is not None:
            record.path = first[0]
            return record
        for reference, start_s, end_s in record.fallbacks:
            location = self._lookup(reference)[0]
            if location is not None:
                record.path = location
                if start_s is not None or end_s is not None:
                    record.start_s, record.end_s = start_s, end_s
                return record
        record.problem, record.missing = first[1], first[2]
        if record.fallbacks and record.missing:
            tried = ", ".join(repr(f[0]) for f in record.fallbacks)
            record.problem += f" (also tried {tried})"
        return record

    def _lookup(self, reference: str) -> tuple[str | None, str | None, bool]:
        """(location, problem, missing) for one reference."""
        if is_url(reference):
            return reference, None, False  # a full URL: checked when it is fetched
        if self.remote:
            relative = posixpath.normpath(reference)
            if reference.startswith("/") or relative == ".." or relative.startswith("../"):
                return None, f"path escapes the videos folder: {reference!r}", False
            if not self.listable:
                if not os.path.splitext(reference)[1]:
                    return None, f"{reference!r} has no extension and {self.root} cannot be listed (http): name the file", False
                return self._location(relative), None, False
            direct = self._by_relative.get(_nfc(relative))
            if direct is not None:
                return direct, None, False
        else:
            candidate = os.path.realpath(os.path.join(self.root, reference))
            if os.path.commonpath([candidate, self.root]) != self.root:
                return None, f"path escapes the videos folder: {reference!r}", False
            if os.path.isfile(candidate):
                return candidate, None, False
            relative = _nfc(os.path.normpath(reference))
            if relative in self._by_relative:
                return self._by_relative[relative], None, False
        if "/" not in reference and os.sep not in reference:
            for table, what in ((self._by_name, "file name"), (self._by_stem, "id")):
                matches = table.get(_nfc(reference))
                if matches:
                    return self._one(reference, matches, what)
            if os.path.splitext(reference)[1]:  # a name with its extension: the stems were looked at too, nothing more to say
                return None, f"no video file named {reference!r} under {self.root}", True
            return None, f"no video file named {reference!r} (with any extension) under {self.root}", True
        return None, f"video file not found: {reference!r}", True

    def _one(self, reference: str, matches: list[str], what: str) -> tuple[str | None, str | None, bool]:
        if not self.remote:
            matches = list(dict.fromkeys(os.path.realpath(m) for m in matches))  # a link to the same file is one file
        if len(matches) == 1:
            return matches[0], None, False
        names = ", ".join(repr(self._display(m)) for m in matches)
        return None, f"{what} {reference!r} matches {len(matches)} files: {names}; name the file in the annotation", False
