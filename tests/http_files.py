"""A file served over HTTP with byte ranges (ffmpeg seeks an mp4 by ranges), for the test web servers."""

from __future__ import annotations

import http.server
from pathlib import Path


def send_file(handler: http.server.BaseHTTPRequestHandler, path: Path) -> None:
    """200 with the whole file, 206 with the range asked for, 404 for a path that is not a file."""
    if not path.is_file():
        handler.send_error(404, "not found")
        return
    data = path.read_bytes()
    start, end = 0, len(data) - 1
    if "Range" in handler.headers:
        first, _, last = handler.headers["Range"].removeprefix("bytes=").partition("-")
        start, end = int(first or 0), int(last) if last else len(data) - 1
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
    else:
        handler.send_response(200)
    handler.send_header("Accept-Ranges", "bytes")
    handler.send_header("Content-Length", str(end - start + 1))
    handler.end_headers()
    handler.wfile.write(data[start : end + 1])
