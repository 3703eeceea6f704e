"""Videos in object stores and on the web, handed to ffmpeg without filling the local disk.

- ``http(s)://``: ffmpeg reads the URL itself (range requests, so an mp4 with its index at the
  end works) and reconnects when a connection drops.
- ``s3://``: the object is checked, then presigned and read the same way over HTTP(S): the
  video streams into ffmpeg, nothing is written locally.
- any other fsspec URL (``gs://``, ``hf://``, ...): copied to one temporary file that is removed
  as soon as the video is decoded, so the local disk holds only the videos in flight (one per
  build worker).

Transient failures (connection refused/reset, time-outs, HTTP 5xx) are retried with
back-off; a missing or forbidden object is a recorded failure at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator

from pipeline.extract import ExtractedVideo, ExtractionSettings, Span, VideoDecodeError, extract_video
from pipeline.video_index import is_url

RETRIES = 3
BACKOFF_S = 1.0  # 1 s, 2 s, 4 s between attempts
_TRANSIENT = re.compile(
    r"connection refused|connection reset|timed out|timeout|server returned 5\d\d|http error 5\d\d|"
    r"5\d\d (internal server error|bad gateway|service unavailable|gateway time)|temporary failure|broken pipe|"
    r"end of file|i/o error|input/output error",
    re.I,
)


def _signable(fs: object) -> bool:
    return type(fs).__name__ == "S3FileSystem"


@contextlib.contextmanager
def ffmpeg_input(location: str) -> Iterator[str]:
    """What to give ffmpeg for ``location``: the path or URL itself, a presigned URL, or a
    temporary copy (removed on exit)."""
    if not is_url(location) or location.startswith(("http://", "https://")):
        yield location
        return
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(location, skip_instance_cache=True)
        info = fs.info(path)
    except FileNotFoundError:
        raise VideoDecodeError(location, "object not found") from None
    except PermissionError as error:
        raise VideoDecodeError(location, f"access denied ({error})") from None
    except Exception as error:  # noqa: BLE001 - backends raise their own errors; named in the report
        raise VideoDecodeError(location, f"cannot reach the object ({type(error).__name__}: {error})") from None
    if info.get("size") == 0:
        raise VideoDecodeError(location, "object is empty")
    if _signable(fs):
        yield fs.sign(path, expiration=6 * 3600)
        return
    with tempfile.TemporaryDirectory(prefix="pipeline-remote-") as scratch:
        local = os.path.join(scratch, "video" + os.path.splitext(path)[1])
        try:
            with fs.open(path, "rb") as source, open(local, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        except Exception as error:  # noqa: BLE001
            raise VideoDecodeError(location, f"download failed ({type(error).__name__}: {error})") from None
        yield local


def _transient(error: VideoDecodeError) -> bool:
    return bool(_TRANSIENT.search(f"{error.reason}\n{error.stderr_tail}")) and "404" not in error.stderr_tail


def extract_location(location: str, settings: ExtractionSettings, span: Span | None = None) -> ExtractedVideo:
    """``extract_video`` for a local path or any URL, retrying what a network hiccup explains."""
    if not is_url(location):
        return extract_video(location, settings, span)
    for attempt in range(RETRIES + 1):
        try:
            with ffmpeg_input(location) as source:
                return extract_video(source, settings, span, name=location)
        except VideoDecodeError as error:
            if attempt == RETRIES or not _transient(error):
                if attempt:
                    raise VideoDecodeError(error.path, f"{error.reason} (after {attempt + 1} attempts)", error.stderr_tail) from None
                raise
            time.sleep(BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")
