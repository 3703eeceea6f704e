"""``python -m search.serve --index INDEX [--port 8000]``: the search service (page + JSON API) on uvicorn.

The app is search/service.py (FastAPI); this command loads the index once, read-only (arrays
memory-mapped on local disk), and serves it with uvicorn on 127.0.0.1 unless ``--host`` says
otherwise (then a warning: anyone who can reach the address can search, and the frames of every
indexed video can be read). ``--api-key`` (or ``SEARCH_API_KEY``) protects every route. SIGHUP,
or ``POST /api/admin/reload`` with the key, loads the index at ``--index`` again and swaps it in
once ready; the old one answers until then.

Query files (``POST /api/search/file`` and the page's file form) are a bounded resource: a few
decodes at once and a short queue (then 503 with Retry-After), a file's duration, frame size and
frame count checked from its header before decoding, a wall time and a memory cap on each ffmpeg
child, which is killed when its client disconnects (search/decode_gate.py). Every body is bounded by
the bytes received (search/body_limits.py). ``/api/health`` lists each limit.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from typing import TYPE_CHECKING

from runtime.cli import HelpFormatter
from search.decode_limits import QueryDecodeLimits
from search.options import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_UPLOAD_TIMEOUT_S,
    add_searcher_arguments,
    check_searcher_arguments,
)

if TYPE_CHECKING:
    from search.served_index import IndexHolder

logger = logging.getLogger("search.serve")
# uvicorn reads a request head up to this size: a 10 MB query then gets the service's own 400
# ("the query has 10,485,760 characters; the limit is 1,000") instead of a reset connection
MAX_REQUEST_HEAD_BYTES = 16 * 1024 * 1024
LOGGED_PATH_CHARS = 200


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound and listening before uvicorn starts, so that --port 0 can print the port it got and a
    client that connects at once waits in the backlog instead of being refused. The protocol is named
    (IPPROTO_TCP): asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it a
    kept-alive connection waits ~40 ms per response for the client's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


class SafeLogLines(logging.Filter):
    """No log line holds the API key: the value of a parameter whose decoded name is ``api_key``, in the
    message or any of its arguments, is replaced by ``[redacted]``, and so is the key itself wherever it
    appears (search/api_key.py). On the access log (``shorten_paths``) a path is also cut to
    ``LOGGED_PATH_CHARS``: a 10 MB query is logged as its first characters and its length, not as 10 MB
    of log."""

    def __init__(self, shorten_paths: bool = False, secret: str | None = None) -> None:
        from search.api_key import KeyScrubber, redact_api_key

        super().__init__()
        self.shorten_paths = shorten_paths
        scrub = KeyScrubber(secret) if secret else None
        self.clean = (lambda text: scrub(redact_api_key(text))) if scrub else redact_api_key

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = self.clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.clean(a) if isinstance(a, str) else a for a in record.args)
            if self.shorten_paths and len(record.args) >= 3 and isinstance(record.args[2], str) and len(record.args[2]) > LOGGED_PATH_CHARS:
                path = record.args[2]
                record.args = (*record.args[:2], f"{path[:LOGGED_PATH_CHARS]}...({len(path):,} characters)", *record.args[3:])
        return True


DECODE_LIMIT_FLAGS = {  # QueryDecodeLimits field: (flag, type, help)
    "concurrent": ("--max-query-decodes", int, "query files decoded at once (default: half the cores)"),
    "queue": ("--query-decode-queue", int, "query files that may wait (and upload) for a decode; past that, 503 with Retry-After"),
    "max_seconds": ("--max-query-seconds", float, "longest query file by its header; one whose header gives no duration is decoded up to there"),
    "max_pixels": ("--max-query-pixels", int, "most pixels in one frame of a query file (default: 4K)"),
    "max_frames": ("--max-query-frames", int, "most frames a query file may declare (duration x frame rate)"),
    "wall_s": ("--query-decode-timeout-s", float, "longest one query file's ffmpeg may run"),
    "memory_mb": ("--query-decode-memory-mb", int, "address-space cap of one query file's ffmpeg (RLIMIT_AS)"),
}


def add_decode_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """Each bound on query files (search/decode_gate.py) as a flag, its default from QueryDecodeLimits."""
    defaults = QueryDecodeLimits()
    group = parser.add_argument_group("query files (bounded decoding; /api/health lists the limits in force)")
    for field, (flag, kind, text) in DECODE_LIMIT_FLAGS.items():
        group.add_argument(flag, type=kind, default=getattr(defaults, field), help=text)


def decode_limits_of(args: argparse.Namespace) -> QueryDecodeLimits:
    return QueryDecodeLimits(**{field: getattr(args, flag[2:].replace("-", "_")) for field, (flag, _, _) in DECODE_LIMIT_FLAGS.items()})


def reload_on_sighup(holder: IndexHolder) -> None:
    def reload() -> None:
        try:
            holder.reload()
        except Exception:  # noqa: BLE001 - a failed reload keeps the old index serving; the log says why
            logger.exception("reload of %s failed; still serving the previous index", holder.settings.index_url)

    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=reload, name="index-reload", daemon=True).start())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.serve", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--index", required=True, help="index folder or fsspec URL (python -m search.index)")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--api-key", default=os.environ.get("SEARCH_API_KEY"), help="require this key on every route (default: $SEARCH_API_KEY, which keeps it out of the process list)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="most queries encoded together")
    parser.add_argument("--videos", help="the folder the indexed videos were built from (the build's --videos): the page plays a "
                                         "moment's source video from its second (HTTP range requests)")  # fmt: skip
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / (1 << 20),
                        help="largest query video or image accepted (refused from its Content-Length before it is read)")
    parser.add_argument("--upload-timeout-s", type=float, default=DEFAULT_UPLOAD_TIMEOUT_S,
                        help="a request body (a query file, a JSON vector) must arrive within this; 408 after it")  # fmt: skip
    add_decode_limit_arguments(parser)
    add_searcher_arguments(parser, query_encoder="auto")
    args = parser.parse_args(argv)
    check_searcher_arguments(parser, args)
    if args.max_batch < 1 or args.max_upload_mb <= 0 or (args.api_key is not None and len(args.api_key) < 8) or args.upload_timeout_s <= 0:
        parser.error("--max-batch must be at least 1, --max-upload-mb and --upload-timeout-s positive and an --api-key at least 8 characters")
    try:
        decode_limits = decode_limits_of(args)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach it can search this index and read its videos' frames"
              f"{'' if args.api_key else ' (no --api-key set)'}", file=sys.stderr)  # fmt: skip
    if args.videos is not None and not os.path.isdir(args.videos):
        parser.error(f"--videos {args.videos}: not a folder")
    # the options are usable: now the service's modules, torch and the model (``--help`` never waits for them)
    import uvicorn

    from search.answers import search_device
    from search.index_format import IndexFormatError
    from search.served_index import IndexHolder, SearchSettings
    from search.service import create_app
    from shards.storage import StorageError

    try:
        settings = SearchSettings(args.index, args.checkpoint, args.base_weights, args.mode, args.rerank_topk, args.nprobe, search_device(),
                                  group=not args.ungrouped, query_encoder=args.query_encoder)  # fmt: skip
        holder = IndexHolder(settings)
        sock = listening_socket(args.host, args.port)
    except (FileNotFoundError, RuntimeError, StorageError, IndexFormatError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    app = create_app(holder, args.api_key, args.max_batch, int(args.max_upload_mb * (1 << 20)), args.videos, decode_limits,
                     args.upload_timeout_s)  # fmt: skip
    config = uvicorn.Config(app, log_level="info", h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES, server_header=False,
                            timeout_keep_alive=5)  # fmt: skip
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"searching {len(holder.current.index):,} videos of {args.index} at http://{shown}:{port}/  (Ctrl-C stops; SIGHUP reloads)",
          flush=True)  # fmt: skip
    reload_on_sighup(holder)
    server = uvicorn.Server(config)  # configures uvicorn's loggers
    logging.getLogger("uvicorn.access").addFilter(SafeLogLines(shorten_paths=True, secret=args.api_key))
    for name in ("uvicorn.error", "uvicorn", "search.service", "search.serve"):  # no line of these may carry the key either
        logging.getLogger(name).addFilter(SafeLogLines(secret=args.api_key))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
