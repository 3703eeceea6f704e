"""The search service: FastAPI routes over an ``IndexHolder``, queries batched by a ``QueryBatcher``.

Routes (``/openapi.json`` describes the API ones):

- ``GET /`` the page (``?q=...&k=...`` shows results), ``GET /video/{key}`` a video's frames,
  ``GET /thumb/{key}`` its strip, ``GET /frame/{key}/{i}`` one frame (read back from its shard);
- ``GET /api/search?q=&k=``, ``GET /api/video/{key}``, ``GET /api/health`` (JSON);
- ``POST /api/admin/reload``: load the index again and serve it once ready (needs ``api_key``).

Every answer to bad input is a 4xx with a sentence that says what was wrong, in JSON on ``/api/``
and as a page elsewhere: a query that is empty, over 1,000 characters, not UTF-8 or holding
control characters (checked on the raw bytes of the URL, before anything decodes them), ``k``
outside 1..100 or not a number, an unknown key or frame, a path that names nothing (``..`` and
its encodings included: no route reads a file by a name from the URL), a method a route does not
take (405 with ``Allow``). Anything else is a 500 that says only that the server failed; the error
and its trace go to the log. Bodies are bounded by the bytes received (search/body_limits.py) and
query files are decoded as a bounded resource (search/decode_gate.py).
With ``api_key`` set every route, the page and the schema included, wants it (search/api_key.py
says how: a header on the JSON API; on the page also a cookie holding a token derived from the key,
set by opening ``?api_key=KEY`` once, which is answered with a redirect to the same URL without
the key so it stays out of the address bar, the history and every log line).
"""

from __future__ import annotations

import html
import io
import json
import logging
import mimetypes
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search import search_page
from search.answers import result_json
from search.api_key import KeyGuard
from search.body_limits import NO_BODY, BodyLimits, BodyRule, PayloadRefused
from search.decode_gate import ClientGone, DecodeGate, ServiceBusy
from search.decode_limits import QueryDecodeLimits
from search.media_query import MediaQueryError, media_suffix, search_media_file
from search.moments import time_range
from search.options import DEFAULT_MAX_BATCH, DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_UPLOAD_TIMEOUT_S
from search.query import QueryError, check_query
from search.query_batcher import QueryBatcher
from search.searcher import SearchResult, VectorQueryError
from search.served_index import IndexHolder, ServedIndex
from search.vector_input import vector_from_npy
from shards.sample_format import frame_members

logger = logging.getLogger("search.service")
MAX_K = 100
MAX_JSON_BODY_BYTES = 256 << 10  # a 4,096-dim vector as JSON with full float precision is ~100 KB
FILE_ROUTES = ("/api/search/file", "/search/file")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


class BadRequest(ValueError):
    """Input the service answers with 400 and this message."""


class _Forbidden(PermissionError):
    """A route this service was not started to allow (403)."""


async def received_file(request: Request, folder: str) -> tuple[str, str | None]:
    """An uploaded query file written to ``folder`` as it arrives (memory does not grow with its size), and
    its name: a multipart form's ``file`` field (the page, ``curl -F file=@clip.mp4``) or the raw body
    (``curl --data-binary @clip.mp4``, its name in ``?filename=``). BodyLimits has bounded the bytes."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadRequest("the form has no file field named 'file'")
        filename = upload.filename
        path = os.path.join(folder, "query" + media_suffix(filename))
        with open(path, "wb") as handle:
            await run_in_threadpool(shutil.copyfileobj, upload.file, handle)
        await upload.close()
    else:
        filename = request.query_params.get("filename")
        path = os.path.join(folder, "query" + media_suffix(filename))
        with open(path, "wb") as handle:
            async for chunk in request.stream():
                handle.write(chunk)  # a page-cache write of at most 64 KB: not worth a thread hop
    if os.path.getsize(path) == 0:
        raise BadRequest(f"{filename or 'the upload'}: the file is empty")
    return path, filename


async def received_json(request: Request) -> object:
    """The body as JSON, parsed on a worker thread (a large body must not hold the event loop); BodyLimits has
    bounded its size. Too deep a nesting is a 400 like any other malformed JSON."""
    body = await request.body()
    try:
        return await run_in_threadpool(json.loads, body)
    except RecursionError:
        raise BadRequest("the body is JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"the body is not JSON ({str(error)[:120]})") from None


def body_rule(max_upload_bytes: int) -> Callable[[str, str], BodyRule]:
    """What each route takes as a body (search/body_limits.py): a query file, a JSON vector, or nothing."""
    upload = BodyRule(max_upload_bytes, "file", needs_length=True)
    vector = BodyRule(MAX_JSON_BODY_BYTES, "JSON body")

    def rule_for(method: str, path: str) -> BodyRule:
        if method == "POST" and path in FILE_ROUTES:
            return upload
        if method == "POST" and path == "/api/search":
            return vector
        return NO_BODY

    return rule_for


def raw_parameters(request: Request) -> dict[str, bytes]:
    """The URL's parameters as the bytes sent: a query that is not UTF-8 is reported, not mangled
    into replacement characters (latin-1 maps bytes to characters one to one)."""
    pairs = urllib.parse.parse_qsl(request.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    return {name: value.encode("latin-1") for name, value in pairs}


def parse_k(raw: bytes | None) -> int:
    text = (raw or b"10").decode("latin-1")
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_K:
        raise BadRequest(f"k must be a whole number from 1 to {MAX_K}, not {text[:20]!r}")
    return int(text)


def _query(parameters: dict[str, bytes]) -> str:
    if "q" not in parameters:
        raise BadRequest("add the query as ?q=...")
    return check_query(parameters["q"])


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_response(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    phrase = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
              408: "Request Timeout", 411: "Length Required", 413: "Content Too Large", 503: "Service Unavailable"}.get(status, "Error")  # fmt: skip
    return HTMLResponse(search_page.page(f"{status} {phrase}", search_page.error(status, phrase, message)), status_code=status, headers=headers)


def create_app(holder: IndexHolder, api_key: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, videos_root: str | None = None,
               decode_limits: QueryDecodeLimits | None = None, upload_timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S) -> FastAPI:  # fmt: skip
    """The service over ``holder``'s index (the caller owns loading it; the app owns the batcher and the decode
    gate). ``videos_root``: the folder the indexed videos were built from (the build's --videos), to play a
    moment's source video. ``decode_limits`` bound query files (search/decode_gate.py); ``max_upload_bytes`` and
    ``upload_timeout_s`` every body (search/body_limits.py)."""
    batcher = QueryBatcher(lambda: holder.current.searcher, max_batch)
    gate = DecodeGate(decode_limits or QueryDecodeLimits())

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202
        yield
        batcher.close()
        gate.close()

    app = FastAPI(title="clip4clip-stream video search", version="1", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Text-to-video search over an index made by python -m search.index (docs/search.md).")  # fmt: skip
    app.state.holder, app.state.batcher, app.state.gate = holder, batcher, gate
    app.state.uploads = {"max_upload_bytes": max_upload_bytes, "max_json_bytes": MAX_JSON_BODY_BYTES, "upload_timeout_s": upload_timeout_s}
    _install_error_handlers(app)

    async def refuse(scope: dict, refusal: PayloadRefused) -> Response:
        return _error_response(Request(scope), refusal.status, str(refusal), {"Connection": "close"})

    app.add_middleware(BodyLimits, rule_for=body_rule(max_upload_bytes), refuse=refuse, read_timeout_s=upload_timeout_s)
    _install_guard(app, api_key)  # added last, so outermost: the key is checked first, and every answer, a refusal too, gets the headers

    async def run_search(parameters: dict[str, bytes]) -> SearchResult:
        query, k = _query(parameters), parse_k(parameters.get("k"))
        return await batcher.search(query, k)

    async def run_file_search(request: Request, k: int) -> SearchResult:
        async with gate.admission():  # a place before the upload is read: buffered uploads are bounded too
            with tempfile.TemporaryDirectory(prefix="search-query-") as scratch:
                path, filename = await received_file(request, scratch)
                searcher = holder.current.searcher
                if (filename or "").lower().endswith(".npy"):  # a vector saved with numpy (the page's "vector" link gives one)
                    with open(path, "rb") as handle:
                        data = handle.read(MAX_JSON_BODY_BYTES)  # a vector's file is far smaller; a longer one fails the size check
                    vector = vector_from_npy(data, searcher.index.manifest["dim"], filename)
                    return await run_in_threadpool(searcher.search_vector, vector, k, f"vector {filename}")
                name = filename or "upload"
                return await gate.run(request, lambda guards: search_media_file(searcher, path, k, name, guards, gate.limits))

    sources = SourceVideos(videos_root)
    _api_routes(app, holder, batcher, run_search, run_file_search, api_key, sources)
    _page_routes(app, holder, run_search, run_file_search, sources)
    return app


class SourceVideos:
    """The source videos of indexed rows, under the build's videos folder: a moment plays from its second.

    Only a row's own ``source_file`` is served (the key is looked up in the index; nothing is read by a
    name from the URL), only inside the folder (a link or ``..`` that leads out is refused), by
    Starlette's FileResponse, which answers HTTP range requests (206): a player seeks into a long
    video without downloading it."""

    def __init__(self, root: str | None) -> None:
        self.root = None if root is None else os.path.realpath(root)

    def path_of(self, record: dict) -> str | None:
        """The file of a row's source video, or None when this service cannot reach it."""
        relative = record.get("source_file")
        if self.root is None or not relative or "://" in relative:
            return None
        path = os.path.realpath(os.path.join(self.root, relative))
        if os.path.commonpath([path, self.root]) != self.root or not os.path.isfile(path):
            return None
        return path

    def play_url(self, record: dict) -> str | None:
        """``/source/KEY#t=START,END`` (a media fragment: the player starts at the moment), where reachable."""
        if self.path_of(record) is None:
            return None
        span = time_range(record)
        fragment = "" if span is None else f"#t={span[0]:g}" + ("" if span[1] is None else f",{span[1]:g}")
        return f"/source/{search_page.key_path(record['key'])}{fragment}"


def _install_guard(app: FastAPI, api_key: str | None) -> None:
    """The API key on every route (when set), security headers and caching rules on every answer."""
    app.add_middleware(Guard, keys=KeyGuard(api_key) if api_key is not None else None)


class Guard:
    """The key check and the answer's headers as a plain ASGI middleware. Not Starlette's BaseHTTPMiddleware:
    that runs ``receive`` in a task group of its own, which turns a body refused while it arrives
    (search/body_limits.py) into an ExceptionGroup, a 500, instead of its 408/413."""

    def __init__(self, app: ASGIApp, keys: KeyGuard | None) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.keys is not None:
            raw_path = scope.get("raw_path", b"").decode("latin-1") or None
            check = self.keys.check(request.method, request.url.path, request.headers, request.cookies, raw_parameters(request), raw_path)
            if not check.allowed:
                await _error_response(request, 401, check.refusal, {"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
            if check.redirect_to is not None:  # the key came in the URL: drop it from there, remember it as a token
                response = Response(status_code=303, headers={"Location": check.redirect_to, "Cache-Control": "no-store", **SECURITY_HEADERS})
                self.keys.set_cookie(response)
                await response(scope, receive, send)
                return
        no_store = _wants_json(request) or request.url.path == "/" or request.url.path.startswith("/video/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.update(SECURITY_HEADERS)
                if no_store and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Every failure as a status and a sentence: JSON under /api/, a page elsewhere."""

    @app.exception_handler(BadRequest)
    @app.exception_handler(QueryError)
    @app.exception_handler(VectorQueryError)
    async def bad_request(request: Request, error: ValueError) -> Response:
        return _error_response(request, 400, str(error))

    @app.exception_handler(MediaQueryError)
    async def bad_file(request: Request, error: MediaQueryError) -> Response:
        return _error_response(request, error.status, str(error))

    @app.exception_handler(ServiceBusy)
    async def busy(request: Request, error: ServiceBusy) -> Response:
        return _error_response(request, 503, str(error), {"Retry-After": str(error.retry_after_s), "Connection": "close"})

    @app.exception_handler(ClientGone)
    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, error: Exception) -> Response:  # nobody reads it: the access log shows nginx's 499
        return Response(status_code=499)

    @app.exception_handler(LookupError)
    @app.exception_handler(FileNotFoundError)
    async def not_found(request: Request, error: Exception) -> Response:
        return _error_response(request, 404, str(error).strip("'\""))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error_response(request, 400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        message = {404: f"nothing at {request.url.path[:200]}", 405: f"{request.method} is not accepted here"}.get(error.status_code, str(error.detail))
        return _error_response(request, error.status_code, message, getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def failure(request: Request, error: Exception) -> Response:
        logger.exception("%s %s failed", request.method, request.url.path[:200])
        # never the exception's text: it can carry paths, data or a hint for the next attack; the log has it
        return _error_response(request, 500, "the server failed on this request; its log says why")

    @app.exception_handler(PayloadRefused)
    async def refused(request: Request, error: PayloadRefused) -> Response:
        return _error_response(request, error.status, str(error), {"Connection": "close"})

    @app.exception_handler(_Forbidden)
    async def forbidden(request: Request, error: _Forbidden) -> Response:
        return _error_response(request, 403, str(error))


def _api_routes(app: FastAPI, holder: IndexHolder, batcher: QueryBatcher, run_search, run_file_search, api_key: str | None,  # noqa: ANN001
                sources: SourceVideos) -> None:  # fmt: skip
    """The JSON API (these routes make up /openapi.json)."""

    def with_vectors(result: SearchResult, include: str) -> dict:
        wanted = {part for part in include.split(",") if part}
        if wanted - {"vectors"}:
            raise BadRequest(f"include takes 'vectors', not {sorted(wanted - {'vectors'})}")
        answer = result_json(result)
        for hit in answer["hits"]:
            for shown in [hit, *hit.get("moments", [])]:
                play = sources.play_url(shown)
                if play is not None:
                    shown["play"] = play
        if "vectors" in wanted and result.hits:
            vectors = holder.current.index.take("video", np.array([hit.row for hit in result.hits]))
            for hit, vector in zip(answer["hits"], vectors, strict=True):
                hit["vector"] = vector.astype(np.float32).tolist()
        return answer

    @app.get("/api/search", summary="The top k videos for a text query, or more like an indexed video (like=KEY)")
    async def api_search(request: Request, q: str | None = Query(None, description="the query: 1 to 1,000 characters of UTF-8 text"),
                         like: str | None = Query(None, description="instead of q: the key of an indexed video to find more like"),
                         k: int = Query(10, ge=1, le=MAX_K, description="how many results"),
                         include: str = Query("", description="vectors: each hit also carries its coarse video vector")) -> dict:  # fmt: skip
        parameters = raw_parameters(request)
        if "like" in parameters:
            if "q" in parameters:
                raise BadRequest("give q or like, not both")
            key = parameters["like"].decode("utf-8", errors="replace")
            result = await run_in_threadpool(holder.current.searcher.search_like, key, parse_k(parameters.get("k")))
        else:
            result = await run_search(parameters)
        return with_vectors(result, include)

    @app.post("/api/search", summary="The top k videos for a vector in the index's coarse space: {\"vector\": [...], \"k\": 10}")
    async def api_search_vector(request: Request) -> dict:
        body = await received_json(request)
        if not isinstance(body, dict) or "vector" not in body:
            raise BadRequest('the body must be a JSON object with a "vector" (and optionally "k")')
        k = body.get("k", 10)
        if type(k) is not int or not 1 <= k <= MAX_K:
            raise BadRequest(f"k must be a whole number from 1 to {MAX_K}")
        include = body.get("include", "")
        if not isinstance(include, str):
            raise BadRequest("include must be a string ('vectors')")
        result = await run_in_threadpool(holder.current.searcher.search_vector, body["vector"], k)
        return with_vectors(result, include)

    @app.post("/api/search/file", summary="The top k videos for a video or image file: the raw body, or a multipart form's 'file' field")
    async def api_search_file(request: Request, k: int = Query(10, ge=1, le=MAX_K, description="how many results"),
                              filename: str | None = Query(None, description="the file's name, for a raw body (its extension helps ffmpeg)"),
                              include: str = Query("", description="vectors: each hit also carries its coarse video vector")) -> dict:  # fmt: skip
        result = await run_file_search(request, parse_k(raw_parameters(request).get("k")))
        return with_vectors(result, include)

    @app.get("/api/video/{key}", summary="One indexed video's record, with its thumbnail and frame URLs")
    def api_video(key: str = Path(..., description="the video's key, as search results give it")) -> dict:
        served = holder.current
        row = served.row_of(key)
        record = served.index.record(row)
        stored = len(frame_members(served.samples.get(record["shard"], record["key"])))  # every frame the shard holds
        link = search_page.key_path(key)
        return {**record, "row": row, "thumbnail": f"/thumb/{link}", "frames_page": f"/video/{link}",
                "frame_urls": [f"/frame/{link}/{i}" for i in range(stored)]}  # fmt: skip

    @app.get("/api/health", summary="Whether the service answers, and which index it serves")
    async def api_health() -> dict:
        served = holder.current
        manifest = served.index.manifest
        return {"status": "ok", "index": holder.settings.index_url, "videos": len(served.index), "model_sha256": manifest["model_sha256"],
                "index_updated": manifest.get("updated"), "loaded_at": served.loaded_at, "reloads": holder.reloads,
                "search": {"method": served.searcher.method, "rerank_topk": served.searcher.rerank_topk,
                           "grouped_by_source_video": served.searcher.grouped, "query_encoder": served.searcher.encoder_check},
                "batches": {"queries": batcher.queries, "batches": batcher.batches},
                "uploads": app.state.uploads, "query_decodes": app.state.gate.to_json()}  # fmt: skip

    @app.post("/api/admin/reload", summary="Load the index again (a newer one at the same place) and serve it once ready")
    async def api_reload(request: Request) -> dict:
        if api_key is None:
            raise _Forbidden("reloading over HTTP needs the service started with --api-key (or send SIGHUP to its process)")
        try:
            await run_in_threadpool(holder.reload)
        except Exception as error:  # noqa: BLE001 - the operator (who holds the key) is told why; the old index still serves
            logger.exception("reload of %s failed", holder.settings.index_url)
            reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
            return _error_response(request, 500, f"the index could not be loaded again, the previous one still serves: {reason}")
        return await api_health()


def _page_routes(app: FastAPI, holder: IndexHolder, run_search, run_file_search, sources: SourceVideos) -> None:  # noqa: ANN001
    """The page, a video's frames, thumbnails and frames, source videos (not in the schema)."""

    def page_top(served: ServedIndex) -> str:
        """The heading every search page starts with: the index's size, its model and step."""
        manifest = served.index.manifest
        return search_page.header(len(served.index), manifest["model"]["sim_header"], manifest["step"])

    def answer_page(served: ServedIndex, result: SearchResult, k: int, shown_query: str = "") -> HTMLResponse:
        """A search's results under the heading and the forms (of the index that answered, even during a reload)."""
        listed = search_page.results(result, len(served.index), k, sources.play_url, served.searcher.grouped)
        body = page_top(served) + search_page.search_form(shown_query, k) + listed
        return HTMLResponse(search_page.page(f"{result.query[:60]} - video search", body))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request) -> HTMLResponse:
        served = holder.current
        parameters = raw_parameters(request)
        k = parse_k(parameters.get("k"))
        top = page_top(served)
        if "like" in parameters:  # a result's "more like this" link
            key = parameters["like"].decode("utf-8", errors="replace")
            return answer_page(served, await run_in_threadpool(served.searcher.search_like, key, k), k)
        if "q" not in parameters:
            return HTMLResponse(search_page.page("Video search", top + search_page.search_form("", k)))
        shown = parameters["q"].decode("utf-8", errors="replace")[:200]
        try:
            result = await run_search(parameters)
        except QueryError as error:
            body = top + search_page.search_form(shown, k) + f"<p class='error'>{html.escape(str(error))}</p>"
            return HTMLResponse(search_page.page("Video search", body), status_code=400)
        return answer_page(served, result, k, result.query)

    @app.post("/search/file", response_class=HTMLResponse, include_in_schema=False)
    async def file_page(request: Request) -> HTMLResponse:
        served = holder.current
        k = parse_k(raw_parameters(request).get("k"))
        return answer_page(served, await run_file_search(request, k), k)

    @app.get("/video/{key}", response_class=HTMLResponse, include_in_schema=False)
    def video_page(key: str) -> HTMLResponse:
        served = holder.current
        record = served.index.record(served.row_of(key))
        sample = served.samples.get(record["shard"], record["key"])
        return HTMLResponse(search_page.page(record["key"], search_page.video(record, len(frame_members(sample)))))

    @app.get("/vector/{key}", include_in_schema=False)
    def vector_file(key: str) -> Response:
        """A row's coarse video vector as a .npy file: searchable again with --vector, or the page's file form."""
        served = holder.current
        row = served.row_of(key)
        buffer = io.BytesIO()
        np.save(buffer, served.index.take("video", np.array([row]))[0].astype(np.float32))
        name = urllib.parse.quote(f"{served.index.record(row)['key']}.npy")
        return Response(buffer.getvalue(), media_type="application/octet-stream",
                        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"})  # fmt: skip

    @app.get("/thumb/{key}", include_in_schema=False)
    def thumbnail(key: str) -> Response:
        served = holder.current
        return Response(served.index.thumbnail(served.row_of(key)), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/frame/{key}/{which}", include_in_schema=False)
    def frame(key: str, which: str) -> Response:
        served = holder.current
        record = served.index.record(served.row_of(key))
        sample = served.samples.get(record["shard"], record["key"])
        names = frame_members(sample)
        if not (which.isascii() and which.isdigit()) or int(which) >= len(names):
            raise LookupError(f"{record['key']} has frames 0 to {len(names) - 1}, not {which[:20]!r}")
        return Response(sample[names[int(which)]], media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/source/{key}", include_in_schema=False)
    def source_video(key: str) -> Response:
        served = holder.current
        record = served.index.record(served.row_of(key))
        path = sources.path_of(record)
        if path is None:
            why = "this service was not started with --videos" if sources.root is None else f"{record.get('source_file')!r} is not under --videos"
            raise LookupError(f"the source video of {record['key']} cannot be played here: {why}")
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)
