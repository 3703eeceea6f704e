"""The pieces that bound what one client can make the search service do, each on its own: the body-limit
middleware (driven as an ASGI app), the decode guards on a real ffmpeg, the .npy and JSON vector checks,
and the key's redaction and the redirect rule. The service as a whole is attacked in
tests/test_service_hostile.py."""

from __future__ import annotations

import asyncio
import io
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.extract import DecodeGuards, DecodeLimitError, ExtractionSettings, SourceInfo, extract_video
from pipeline.ffmpeg_binary import ffmpeg_executable
from search.api_key import REDACTED, KeyScrubber, redact_api_key, safe_local_path
from search.body_limits import BodyLimits, BodyRule, PayloadRefused
from search.decode_limits import QueryDecodeLimits
from search.searcher import VectorQueryError, check_vector
from search.vector_input import vector_from_npy


def make_video(path: Path, source: str, seconds: float, *extra: str) -> Path:
    """A video from one of ffmpeg's generated sources (``color=...``, ``testsrc=...``), made in well under a second."""
    subprocess.run([ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", source, "-t", str(seconds), "-c:v", "libx264",
                    "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra, "-y", str(path)], check=True, timeout=60)  # fmt: skip
    return path


# --- the body-limit middleware, as an ASGI app ------------------------------------------------------------


def _drive(headers: list[tuple[bytes, bytes]], chunks: list[bytes], rule: BodyRule, read_timeout_s: float = 5.0,
           stall_after: int | None = None) -> tuple[int, str]:  # fmt: skip
    """Sends ``chunks`` through BodyLimits to an app that reads the whole body; (status, what it said)."""

    async def app(scope, receive, send):  # noqa: ANN001, ANN202 - reads everything, answers 200 with the size
        size = 0
        try:
            while True:
                message = await receive()
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
        except PayloadRefused as refusal:
            await send({"type": "http.response.start", "status": refusal.status, "headers": []})
            await send({"type": "http.response.body", "body": str(refusal).encode()})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    async def refuse(scope, refusal):  # noqa: ANN001, ANN202
        async def respond(scope, receive, send):  # noqa: ANN001, ANN202
            await send({"type": "http.response.start", "status": refusal.status, "headers": []})
            await send({"type": "http.response.body", "body": str(refusal).encode()})

        return respond

    sent = []

    async def run() -> None:
        queue = list(chunks)

        async def receive():  # noqa: ANN202
            if stall_after is not None and len(chunks) - len(queue) >= stall_after:
                await asyncio.sleep(3600)
            body = queue.pop(0)
            return {"type": "http.request", "body": body, "more_body": bool(queue)}

        async def send(message):  # noqa: ANN001, ANN202
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/upload", "headers": headers}
        await BodyLimits(app, lambda method, path: rule, refuse, read_timeout_s)(scope, receive, send)

    asyncio.run(run())
    return sent[0]["status"], sent[1]["body"].decode()


def test_body_limits_count_the_bytes_received_whatever_the_headers_say():
    rule = BodyRule(1000, "file", needs_length=True)
    length = [(b"content-length", b"10")]
    assert _drive([(b"content-length", b"600")], [b"x" * 300, b"x" * 300], rule) == (200, "600")
    # both framing headers: refused before a byte is read (RFC 9112 section 6.3)
    status, said = _drive([(b"content-length", b"10"), (b"transfer-encoding", b"chunked")], [b"x" * 10], rule)
    assert status == 400 and "both Content-Length and Transfer-Encoding" in said
    # a body that runs past its declared length, or past the limit when none is declared
    status, said = _drive(length, [b"x" * 8, b"x" * 8], rule)
    assert status == 400 and "longer than its Content-Length of 10" in said
    status, said = _drive([], [b"x" * 600, b"x" * 600], rule)
    assert status == 413 and "limit of 1,000 bytes" in said
    # refused from the header alone: too large, a length that is not one number, a route that takes none
    assert _drive([(b"content-length", b"5000")], [b""], rule)[0] == 413
    assert _drive([(b"content-length", b"10"), (b"content-length", b"20")], [b""], rule)[0] == 400
    assert _drive([(b"content-length", b"-1")], [b""], rule)[0] == 400
    assert _drive([(b"transfer-encoding", b"chunked")], [b"x"], rule)[0] == 411
    status, said = _drive([(b"content-length", b"3")], [b"abc"], BodyRule(0))
    assert status == 413 and "takes no body" in said
    # a body that stops arriving
    status, said = _drive([(b"content-length", b"100")], [b"x" * 10, b"x" * 10], rule, read_timeout_s=0.2, stall_after=1)
    assert status == 408 and "within 0.2 s" in said


# --- the decode guards, on a real ffmpeg -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def guard_videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("guarded")
    return {
        "clip": make_video(folder / "clip.mp4", "testsrc=s=320x240:r=24", 5),
        # 10 hours declared, one 1080p frame an hour: 7.7 KB that holds ~1.6 GB in ffmpeg's fps filter
        "ten_hours": make_video(folder / "ten_hours.mp4", "color=gray:s=1920x1080:r=1/3600", 36000),
        # no duration in its header (a raw H.264 stream), 60 s of frames
        "raw": make_video(folder / "raw.h264", "testsrc=s=160x96:r=10", 60, "-f", "h264"),
    }


def test_guarded_decodes_give_the_same_frames(guard_videos):
    settings = ExtractionSettings(max_frames=12, max_seconds=180)
    plain = extract_video(str(guard_videos["clip"]), settings)
    guarded = extract_video(str(guard_videos["clip"]), settings, guards=DecodeGuards(address_space_bytes=2 << 30, single_pass=True, threads=1))
    assert guarded.frames_jpeg == plain.frames_jpeg and guarded.timestamps_s == plain.timestamps_s and len(plain.frames_jpeg) == 5


def test_a_source_check_refuses_from_the_banner_before_decoding(guard_videos):
    seen: list[SourceInfo] = []

    def check(source: SourceInfo) -> str | None:
        seen.append(source)
        return "too long" if source.duration_s and source.duration_s > 60 else None

    with pytest.raises(DecodeLimitError, match="too long"):
        extract_video(str(guard_videos["ten_hours"]), ExtractionSettings(max_seconds=180), guards=DecodeGuards(check_source=check, single_pass=True))
    assert seen[0].duration_s == 36000 and (seen[0].width, seen[0].height) == (1920, 1080)


def test_the_memory_cap_stops_a_decode_that_grows(guard_videos):
    """Without a cap this file's ffmpeg grows past 1.5 GB; under 800 MB of address space it fails, and says so."""
    guards = DecodeGuards(address_space_bytes=800 << 20, single_pass=True, threads=1)
    with pytest.raises(DecodeLimitError, match="memory limit of 800 MB"):
        extract_video(str(guard_videos["ten_hours"]), ExtractionSettings(max_seconds=40000, timeout_s=120), guards=guards)


def test_a_file_without_a_duration_is_decoded_once_up_to_the_bound(guard_videos):
    """A header without a duration: one pass that holds every count up to the bound (the builder, unguarded,
    decodes such a file twice to learn the count), the same frames, and the file cut at the bound."""
    raw = str(guard_videos["raw"])
    within = extract_video(raw, ExtractionSettings(max_frames=12, max_seconds=120), guards=DecodeGuards(single_pass=True))
    assert within.num_candidates == 60 and within.frames_jpeg == extract_video(raw, ExtractionSettings(max_frames=12)).frames_jpeg
    cut = extract_video(raw, ExtractionSettings(max_frames=12, max_seconds=30), guards=DecodeGuards(single_pass=True))
    assert cut.num_candidates == 30 and cut.frames_jpeg == extract_video(raw, ExtractionSettings(max_frames=12, max_seconds=30)).frames_jpeg
    with pytest.raises(ValueError, match="max_seconds"):
        extract_video(raw, ExtractionSettings(), guards=DecodeGuards(single_pass=True))


def test_cancel_kills_the_child_at_once(guard_videos):
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(DecodeLimitError, match="cancelled"):
        extract_video(str(guard_videos["ten_hours"]), ExtractionSettings(max_seconds=40000, timeout_s=120),
                      guards=DecodeGuards(cancel=cancel, single_pass=True, threads=1))  # fmt: skip
    assert time.monotonic() - started < 60  # a bound on a hang, not a speed claim: uncancelled it runs to its 120 s


def test_decode_limits_name_what_was_over_and_the_flag():
    limits = QueryDecodeLimits(max_seconds=60, max_pixels=1000, max_frames=100)
    assert "lasts 10:00:00" in limits.check_source(SourceInfo(36000.0, 25.0, 10, 10, "h264")) and "--max-query-seconds" in limits.check_source(
        SourceInfo(36000.0, 25.0, 10, 10, "h264"))  # fmt: skip
    assert "--max-query-pixels" in limits.check_source(SourceInfo(10.0, 25.0, 40, 40, "h264"))
    assert "declares 250 frames" in limits.check_source(SourceInfo(10.0, 25.0, 10, 10, "h264"))
    assert limits.check_source(SourceInfo(None, None, None, None, None)) is None  # what the header does not say is bounded while decoding
    with pytest.raises(ValueError):
        QueryDecodeLimits(concurrent=0)


# --- query vectors ------------------------------------------------------------------------------------------


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _npy_header(descr: str, shape: tuple) -> bytes:
    """An .npy header alone: what a hostile file declares, with no data behind it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


@pytest.mark.parametrize("data,message", [
    (_npy_header("<f4", (10**12,)), "has shape 1000000000000"),
    (_npy_header("<f4", (8, 8)), "has shape 8x8"),
    (_npy(np.ones(8, dtype=np.complex64)), "complex64 values"),
    (_npy(np.array(["a"] * 8)), "str"),
    (_npy_header("|O", (8,)), "object values"),
    (_npy(np.ones(8, dtype=bool)), "bool values"),
    (_npy(np.ones(8, dtype=np.float32))[:-4], "promises 32"),
    (b"\x93NUMPY\x01\x00" + b"\xff" * 40, "not a .npy array"),
    (b"PK\x03\x04 a zip", "not a .npy array"),
])  # fmt: skip
def test_hostile_npy_files_are_refused_before_any_allocation(data, message):
    with pytest.raises(VectorQueryError, match=message):
        vector_from_npy(data, 8, "query.npy")


def test_a_real_npy_vector_is_read():
    vector = np.linspace(-1, 1, 8)
    assert np.array_equal(vector_from_npy(_npy(vector), 8), vector.astype(np.float32))
    assert np.array_equal(vector_from_npy(_npy(vector[None].astype(np.int16)), 8), vector[None].astype(np.int16)[0].astype(np.float32))


@pytest.mark.parametrize("vector,message", [
    ([10**400] + [0] * 7, "too large for a float"),
    ([1e39] + [0.0] * 7, "infinite"),
    (["1.0"] * 8, "holds a str"),
    ([True] * 8, "holds a bool"),
    ([[1.0]] * 8, "holds a list"),
    ([1.0] * 9, "has 9 values"),
    ({"a": 1}, "is a dict"),
    ("1,2,3", "is a str"),
    ([0] * 8, "all zeros"),
])  # fmt: skip
def test_json_vectors_are_checked_before_conversion(vector, message):
    with pytest.raises(VectorQueryError, match=message):
        check_vector(vector, 8)


# --- the key and redirects -------------------------------------------------------------------------------------


def test_the_key_is_redacted_under_any_encoding_of_its_name():
    for line in ["GET /?api_key=SECRET HTTP/1.1", "GET /?api%5Fkey=SECRET HTTP/1.1", "GET /?API%5FKEY=SECRET&q=a",
                 "GET /?q=a&api%255Fkey=SECRET", "GET /x?a=1;Api_Key=SECRET"]:  # fmt: skip
        assert "SECRET" not in redact_api_key(line) and REDACTED in redact_api_key(line), line
    assert redact_api_key("GET /?q=api_key&k=3") == "GET /?q=api_key&k=3"  # a value that merely says api_key is kept
    scrub = KeyScrubber("k3y/with+odd chars")
    assert scrub("path /k3y%2Fwith%2Bodd%20chars and k3y/with+odd chars") == f"path /{REDACTED} and {REDACTED}"


def test_redirects_stay_on_this_host():
    assert safe_local_path("/\\evil.example/") == "/%5Cevil.example/"
    assert safe_local_path("//evil.example/x") == "/evil.example/x"
    assert safe_local_path("/\t/evil.example") == "/%09/evil.example"
    assert safe_local_path("/video/a%2Fb") == "/video/a%2Fb"  # escapes already there are kept: the same resource
