"""``python -m eval.serve --index INDEX [--port 8000]``: a search page for an index, on 127.0.0.1.

One search box; results as frame strips with their captions, scores and the stage that scored
them; each links to a page with all the sample's frames, read from its shard. Also
``/api/search?q=...&k=...`` (JSON) for scripts. Standard library only (``http.server``): a
page for one person on their own machine needs no framework, and it keeps the dependency list
short. A bad query (empty, too long, not text) gets a 400 with the reason; any other failure a
500 naming the error, never a stack trace; the log has the details.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import sys
import threading
import traceback
import urllib.parse
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from eval.index_format import IndexFormatError
from eval.query import QueryError
from eval.search import add_searcher_arguments, check_searcher_arguments, result_json, searcher_from_arguments, stages_text
from eval.searcher import Searcher, SearchResult
from shards.reader import ReadErrors, iter_samples
from shards.sample_format import frame_members
from shards.storage import StorageError

logger = logging.getLogger("eval.serve")
MAX_K = 100
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
form{display:flex;gap:.5em;margin-bottom:1em} input[name=q]{flex:1;font-size:1.1em;padding:.4em}
button{font-size:1.1em;padding:.4em 1em} .note{color:#666;font-size:.9em} .error{color:#a00;font-weight:600}
table{border-collapse:collapse;width:100%} td{border-top:1px solid #ddd;padding:.5em;vertical-align:top}
td.score{font-family:monospace;white-space:nowrap} img{display:block} ul{margin:0;padding-left:1.2em}
.frames img{display:inline-block;margin:2px;max-width:240px}
"""


class BadRequest(ValueError):
    """A request the page answers with 400 and this message."""


def _page(title: str, body: str) -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>").encode()  # fmt: skip


def _search_form(query: str, k: int) -> str:
    return (f"<form action='/' method='get'><input name='q' value='{html.escape(query, quote=True)}' autofocus "
            f"placeholder='describe a video, e.g. a man is cooking pasta'><input type='hidden' name='k' value='{k}'>"
            "<button type='submit'>Search</button></form>")  # fmt: skip


def results_html(result: SearchResult, total_videos: int) -> str:
    timing = ", ".join(f"{name} {value:.1f} ms" for name, value in result.milliseconds.items())
    rows = []
    for rank, hit in enumerate(result.hits, 1):
        record = hit.record
        captions = "".join(f"<li>{html.escape(c)}</li>" for c in record["captions"][:5]) or "<li class='note'>(no caption)</li>"
        more = f"<div class='note'>+{len(record['captions']) - 5} more</div>" if len(record["captions"]) > 5 else ""
        rows.append(
            f"<tr><td>{rank}</td><td class='score'>{hit.score:.4f}<div class='note'>{hit.stage}</div></td>"
            f"<td><a href='/video/{hit.row}'><img src='/thumb/{hit.row}' alt='{html.escape(record['key'], quote=True)}'></a></td>"
            f"<td><a href='/video/{hit.row}'>{html.escape(record['key'])}</a><ul>{captions}</ul>{more}</td></tr>"
        )
    return (f"<p class='note'>{len(result.hits)} of {total_videos:,} videos; {result.method} search, "
            f"{stages_text(result)}; {html.escape(timing)}</p><table>{''.join(rows)}</table>")  # fmt: skip


class SampleCache:
    """The last few samples read back from their shards, for the frames page (a shard is read
    from its start until the sample's key: seconds for a large shard, so results are kept)."""

    def __init__(self, size: int = 8) -> None:
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, shard: str, key: str) -> dict:
        with self.lock:
            if (shard, key) in self.items:
                self.items.move_to_end((shard, key))
                return self.items[(shard, key)]
        errors = ReadErrors()
        found = next((s for s in iter_samples([shard], errors.handler) if s.get("__key__") == key), None)
        if found is None:
            reason = f" ({errors.errors[0][1]})" if errors.errors else ""
            raise FileNotFoundError(f"sample {key!r} not found in {shard}{reason}")
        with self.lock:
            self.items[(shard, key)] = found
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return found


class SearchApp:
    """What the handler serves: the searcher (one query at a time) and the index's files."""

    def __init__(self, searcher: Searcher) -> None:
        self.searcher, self.index = searcher, searcher.index
        self.search_lock = threading.Lock()
        self.samples = SampleCache()

    def search(self, query: str | bytes, k: int) -> SearchResult:
        with self.search_lock:
            return self.searcher.search(query, k)

    def row(self, text: str) -> int:
        try:
            row = int(text)
        except ValueError as error:
            raise BadRequest(f"{text!r} is not a row number") from error
        if not 0 <= row < len(self.index):
            raise LookupError(f"row {row}: the index has rows 0 to {len(self.index) - 1}")
        return row


def _parameters(raw_query: str) -> dict[str, bytes]:
    """The URL's parameters as raw bytes (a query that is not UTF-8 is reported, not mangled)."""
    # latin-1 maps bytes to characters one to one: percent-decoding with it and encoding back gives the bytes sent
    pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True, encoding="latin-1")
    return {name: value.encode("latin-1", errors="replace") for name, value in pairs}


def _k(parameters: dict[str, bytes]) -> int:
    raw = parameters.get("k", b"10").decode("latin-1")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_K:
        raise BadRequest(f"k must be a whole number from 1 to {MAX_K}, not {raw[:20]!r}")
    return int(raw)


class Handler(BaseHTTPRequestHandler):
    app: SearchApp  # set on the class made by make_server
    server_version = "clip4clip-search/1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        logger.info("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store" if content_type.startswith(("text/html", "application/json")) else "max-age=3600")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: HTTPStatus, message: str, as_json: bool) -> None:
        if as_json:
            self._send(status, json.dumps({"error": message}).encode("utf-8"), "application/json; charset=utf-8")
        else:
            body = f"<h1>{status.value} {html.escape(status.phrase)}</h1><p class='error'>{html.escape(message)}</p><p><a href='/'>search</a></p>"
            self._send(status, _page(f"{status.value} {status.phrase}", body), "text/html; charset=utf-8")

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        as_json = url.path.startswith("/api/")
        try:
            self._route(url.path, _parameters(url.query))
        except (BadRequest, QueryError) as error:
            self._error(HTTPStatus.BAD_REQUEST, str(error), as_json)
        except (LookupError, FileNotFoundError) as error:
            self._error(HTTPStatus.NOT_FOUND, str(error), as_json)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as error:  # noqa: BLE001 - the page answers every request; the log keeps the trace
            logger.error("%s failed:\n%s", self.path, traceback.format_exc())
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the server failed on this request ({type(error).__name__}: {error})", as_json)

    def _route(self, path: str, parameters: dict[str, bytes]) -> None:
        parts = [p for p in path.split("/") if p]
        if not parts:
            return self._home(parameters)
        if parts == ["api", "search"]:
            if "q" not in parameters:
                raise BadRequest("add the query as ?q=...")
            result = self.app.search(parameters["q"], _k(parameters))
            return self._send(HTTPStatus.OK, json.dumps(result_json(result), ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")
        if len(parts) == 2 and parts[0] == "thumb":
            return self._send(HTTPStatus.OK, self.app.index.thumbnail(self.app.row(parts[1])), "image/jpeg")
        if len(parts) == 2 and parts[0] == "video":
            return self._video(self.app.row(parts[1]))
        if len(parts) == 3 and parts[0] == "frame":
            return self._frame(self.app.row(parts[1]), parts[2])
        if parts == ["favicon.ico"]:
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        raise LookupError(f"no page at {path}")

    def _home(self, parameters: dict[str, bytes]) -> None:
        index = self.app.index
        k = _k(parameters)
        header = (f"<h1>Video search</h1><p class='note'>{len(index):,} videos indexed with {html.escape(index.manifest['model']['sim_header'])} "
                  f"(checkpoint step {index.manifest['step']})</p>")  # fmt: skip
        if "q" not in parameters:
            return self._send(HTTPStatus.OK, _page("Video search", header + _search_form("", k)), "text/html; charset=utf-8")
        raw = parameters["q"]
        shown = raw.decode("utf-8", errors="replace")[:200]
        try:
            result = self.app.search(raw, k)
        except QueryError as error:
            body = header + _search_form(shown, k) + f"<p class='error'>{html.escape(str(error))}</p>"
            return self._send(HTTPStatus.BAD_REQUEST, _page("Video search", body), "text/html; charset=utf-8")
        body = header + _search_form(result.query, k) + results_html(result, len(index))
        return self._send(HTTPStatus.OK, _page(f"{result.query[:60]} - video search", body), "text/html; charset=utf-8")

    def _video(self, row: int) -> None:
        record = self.app.index.record(row)
        sample = self.app.samples.get(record["shard"], record["key"])
        frames = "".join(f"<img src='/frame/{row}/{i}' alt='frame {i}'>" for i in range(len(frame_members(sample))))
        captions = "".join(f"<li>{html.escape(c)}</li>" for c in record["captions"]) or "<li class='note'>(no caption)</li>"
        details = {k: record.get(k) for k in ("video_id", "source_file", "duration_s", "segment", "shard")}
        facts = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in details.items() if v is not None)
        body = (f"<p><a href='/'>search</a></p><h1>{html.escape(record['key'])}</h1><div class='frames'>{frames}</div>"
                f"<h2>Captions</h2><ul>{captions}</ul><h2>Sample</h2><table>{facts}</table>")  # fmt: skip
        self._send(HTTPStatus.OK, _page(record["key"], body), "text/html; charset=utf-8")

    def _frame(self, row: int, which: str) -> None:
        record = self.app.index.record(row)
        names = frame_members(self.app.samples.get(record["shard"], record["key"]))
        if not which.isdigit() or int(which) >= len(names):
            raise LookupError(f"{record['key']} has frames 0 to {len(names) - 1}, not {which!r}")
        self._send(HTTPStatus.OK, self.app.samples.get(record["shard"], record["key"])[names[int(which)]], "image/jpeg")


def make_server(searcher: Searcher, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"app": SearchApp(searcher)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="index folder or fsspec URL (python -m eval.index)")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    add_searcher_arguments(parser)
    args = parser.parse_args(argv)
    check_searcher_arguments(parser, args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        searcher = searcher_from_arguments(args)
        server = make_server(searcher, args.host, args.port)
    except (FileNotFoundError, RuntimeError, StorageError, IndexFormatError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"searching {len(searcher.index):,} videos of {args.index} at http://{host}:{port}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
