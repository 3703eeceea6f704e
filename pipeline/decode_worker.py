"""What a build worker process runs: one video in, its frames or its error out.

Kept apart from ``pipeline.build`` on purpose: a spawned worker imports only the module of
the function it runs, and ``pipeline.build`` pulls in the shard writer, webdataset and with
it torch (~0.5 GB and 5-12 s per worker before the first video). This module imports
ffmpeg-python, numpy and Pillow only (fsspec when a video is remote); ``tests/test_build.py`` checks that it stays so.
"""

from __future__ import annotations

from pipeline.extract import ExtractedVideo, ExtractionSettings, Span, VideoDecodeError
from pipeline.remote_videos import extract_location

DecodeTask = tuple[str, ExtractionSettings, Span | None]  # location (path or URL), settings, segment


def decode_one(task: DecodeTask) -> ExtractedVideo | VideoDecodeError:
    """Returns the error instead of raising so one video cannot end a pool."""
    path, settings, span = task
    try:
        return extract_location(path, settings, span)
    except VideoDecodeError as error:
        return error
    except Exception as error:  # noqa: BLE001 - an unexpected decoder bug is still one video's failure
        return VideoDecodeError(path, f"unexpected {type(error).__name__}: {error}")
