"""The search service as deployed: ``python -m search.serve`` (FastAPI on uvicorn) in its own process,
spoken to over HTTP on 127.0.0.1: the API against the searcher, hostile input, slow clients, load,
the API key, and swapping the index without a restart."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from search.index import main as index_main
from search.index_format import VideoIndex
from search.searcher import open_searcher
from tests.conftest import REPO_ROOT
from tests.service_process import Service

pytestmark = pytest.mark.integration
QUERIES = ["a red circle moves left", "a blue square moving up", "green shape going right", "a yellow circle slides down",
           "something moves", "a square"]  # fmt: skip
API_KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def service(search_collection):
    collection = search_collection
    running = Service(collection / "index")
    yield running
    running.stop()


def _search_path(query: str, k: int = 5) -> str:
    return f"/api/search?q={urllib.parse.quote(query)}&k={k}"


def _same_ranking(result: dict, expected: dict) -> bool:
    """The same videos in the same order from the same stages, scores within float rounding of a batch."""
    same_order = [(h["key"], h["stage"]) for h in result["hits"]] == [(h["key"], h["stage"]) for h in expected["hits"]]
    return same_order and all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(result["hits"], expected["hits"], strict=True))


def test_api_answers_as_the_searcher_does(search_collection, service):
    collection = search_collection
    searcher = open_searcher(str(collection / "index"), rerank_topk=4, query_encoder="fp32")
    for query in QUERIES:
        status, result = service.json(_search_path(query, 6))
        assert status == 200
        expected = searcher.search(query, 6)
        assert [h["key"] for h in result["hits"]] == [h.record["key"] for h in expected.hits]
        assert [h["score"] for h in result["hits"]] == pytest.approx([h.score for h in expected.hits], abs=1e-4)
        assert [h["stage"] for h in result["hits"]] == ["fine"] * 4 + ["coarse"] * 2
    status, health = service.json("/api/health")
    assert status == 200 and health["status"] == "ok" and health["videos"] == 8
    assert health["search"]["query_encoder"] == {"encoder": "fp32", "why": "asked for"} and not health["search"]["grouped_by_source_video"]
    key = result["hits"][0]["key"]
    status, video = service.json(f"/api/video/{key}")
    assert status == 200 and video["key"] == key and len(video["captions"]) == 3
    for url in [video["thumbnail"], *video["frame_urls"]]:
        status, headers, body = service.request("GET", url)
        assert status == 200 and headers["content-type"] == "image/jpeg" and body[:2] == b"\xff\xd8"
    assert len(video["frame_urls"]) >= video["frames"] > 0  # every stored frame; "frames" is how many the model read
    assert service.request("GET", f"/frame/{key}/{len(video['frame_urls'])}")[0] == 404


def test_include_vectors_hands_out_each_hits_coarse_vector(search_collection, service):
    from search.index_format import VideoIndex

    status, answer = service.json(_search_path("a red circle moves left", 3) + "&include=vectors")
    assert status == 200 and len(answer["hits"]) == 3
    vectors = VideoIndex(str(search_collection / "index")).video_vectors()
    for hit in answer["hits"]:
        assert hit["vector"] == vectors[hit["row"]].tolist()
    assert "vector" not in service.json(_search_path("a red circle moves left", 3))[1]["hits"][0]
    status, answer = service.json(_search_path("a red circle", 3) + "&include=everything")
    assert status == 400 and "vectors" in answer["error"]


def test_more_like_an_entry_and_query_by_vector(search_collection, service):
    """like=KEY and a POSTed vector rank by cosine with the coarse video vectors (README: query by video or vector)."""
    import numpy as np

    from search.index_format import VideoIndex

    index = VideoIndex(str(search_collection / "index"))
    vectors, keys = index.video_vectors(), index.keys()
    status, answer = service.json("/api/search?like=clip003&k=4")
    assert status == 200 and "coarse video vectors" in answer["note"] and "fine similarity" in answer["note"]  # WTI: one it leaves out
    row = keys.index("clip003")
    cosines = vectors @ vectors[row] / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(vectors[row]))
    expected = [keys[i] for i in np.argsort(-cosines, kind="stable") if i != row][:4]
    assert [hit["key"] for hit in answer["hits"]] == expected
    body = json.dumps({"vector": vectors[row].tolist(), "k": 5, "include": "vectors"}).encode()
    status, _, raw = service.request("POST", "/api/search", {"Content-Type": "application/json", "Content-Length": str(len(body))}, body=body)
    posted = json.loads(raw)
    assert status == 200 and posted["hits"][0]["key"] == "clip003" and [h["key"] for h in posted["hits"][1:]] == expected
    assert len(posted["hits"][0]["vector"]) == vectors.shape[1]
    for bad, message in ((b'{"vector": [1, 2]}', "dimensions"), (b'{"vector": [NaN' + b", 0" * (vectors.shape[1] - 1) + b"]}", "NaN"),
                         (b"not json", "not JSON"), (b'{"k": 3}', '"vector"')):  # fmt: skip
        status, _, raw = service.request("POST", "/api/search", {"Content-Length": str(len(bad))}, body=bad)
        assert status == 400 and message in json.loads(raw)["error"], raw
    status, _, raw = service.request("POST", "/api/search", {"Content-Length": str(10 << 20)}, body=b"{}")  # refused before reading
    assert status == 413 and "at most" in json.loads(raw)["error"]
    assert service.json("/api/search?like=no-such-key")[0] == 404


def _multipart(filename: str, data: bytes) -> tuple[dict, bytes]:
    boundary = "----clip4clip-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    return {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(body))}, body


def test_query_by_an_uploaded_video_or_image(search_collection, sample_dataset, service):
    """POST /api/search/file (raw body or a multipart form) and the page's file form: decoded with the
    index's build settings, so an indexed video finds its own row; hostile uploads are refused."""
    index = VideoIndex(str(search_collection / "index"))
    video = (sample_dataset / "videos" / index.record(index.keys().index("clip006"))["source_file"]).read_bytes()
    status, _, raw = service.request("POST", "/api/search/file?k=3&filename=clip.mp4", {"Content-Length": str(len(video))}, body=video)
    answer = json.loads(raw)
    assert status == 200 and answer["hits"][0]["key"] == "clip006" and answer["hits"][0]["score"] > 0.999, raw
    assert "coarse video vectors" in answer["note"] and answer["milliseconds"]["decode"] > 0
    headers, body = _multipart("clip.mp4", video)
    status, _, raw = service.request("POST", "/api/search/file?k=2", headers, body=body)
    assert status == 200 and [h["key"] for h in json.loads(raw)["hits"]] == [h["key"] for h in answer["hits"][:2]]
    status, _, page = service.request("POST", "/search/file?k=3", headers, body=body)  # the page's form
    assert status == 200 and page.decode().count("<tr class='hit'>") == 3 and "clip006" in page.decode()
    junk = b"GIF89a but then nothing a decoder can use" * 40
    status, _, raw = service.request("POST", "/api/search/file", {"Content-Length": str(len(junk))}, body=junk)
    assert status == 400 and "not a video or image ffmpeg can decode" in json.loads(raw)["error"], raw
    status, _, raw = service.request("POST", "/api/search/file", {"Content-Length": str(1 << 40)}, body=b"x" * 10)  # refused unread
    assert status == 413 and "at most" in json.loads(raw)["error"]
    connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)  # chunked: no length declared
    connection.request("POST", "/api/search/file", body=iter([b"abc"]), encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 411 and "Content-Length" in json.loads(response.read())["error"]
    connection.close()
    status, _, raw = service.request("POST", "/api/search/file", {"Content-Length": "0"}, body=b"")
    assert status == 400 and "empty" in json.loads(raw)["error"]


def test_a_results_vector_downloads_as_npy_and_searches_again(search_collection, service):
    """Vectors out on the page (each result's "vector" link) and back in through the file form (.npy)."""
    import io

    import numpy as np

    index = VideoIndex(str(search_collection / "index"))
    status, headers, body = service.request("GET", "/vector/clip003")
    vector = np.load(io.BytesIO(body), allow_pickle=False)
    assert status == 200 and "clip003.npy" in headers["content-disposition"]
    assert np.array_equal(vector, index.video_vectors()[index.keys().index("clip003")])
    form_headers, form = _multipart("clip003.npy", body)
    status, _, raw = service.request("POST", "/api/search/file?k=2", form_headers, body=form)
    answer = json.loads(raw)
    assert status == 200 and answer["hits"][0]["key"] == "clip003" and answer["query"] == "vector clip003.npy", raw
    for bad, message in ((b"not an array", "not a .npy array"), (_npy(np.zeros(3, dtype=np.float32)), "dimensions")):
        form_headers, form = _multipart("bad.npy", bad)
        status, _, raw = service.request("POST", "/api/search/file", form_headers, body=form)
        assert status == 400 and message in json.loads(raw)["error"], raw
    status, _, page = service.request("GET", "/?q=a+red+circle&k=2")
    assert page.decode().count("class='vector' href='/vector/") == 2


def _npy(array) -> bytes:  # noqa: ANN001
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_page_has_more_like_this_links(service):
    status, _, body = service.request("GET", "/?q=a+blue+square&k=3")
    page = body.decode()
    assert status == 200 and page.count("class='like'") == 3 and "enctype='multipart/form-data'" in page
    first = page.split("class='like' href='")[1].split("'")[0].replace("&amp;", "&")
    status, _, body = service.request("GET", first)
    key = urllib.parse.parse_qs(urllib.parse.urlsplit(first).query)["like"][0]
    assert status == 200 and body.decode().count("<tr class='hit'>") == 3 and f"like {key}" in body.decode()
    assert f"href='/video/{key}'" not in body.decode()  # the entry itself is left out


def test_page_shows_ranked_results_and_a_videos_frames(service):
    status, headers, body = service.request("GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"<form" in body and b"8 videos indexed" in body
    status, _, body = service.request("GET", "/?q=a+red+square+moves+from+left+to+right&k=5")
    page = body.decode()
    assert status == 200 and page.count("<tr class='hit'>") == 5 and page.count("/thumb/") == 5 and "fine" in page and "coarse" in page
    assert "default-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    status, _, body = service.request("GET", "/video/clip000")
    assert status == 200 and body.count(b"/frame/clip000/") == len(service.json("/api/video/clip000")[1]["frame_urls"]) and b"Captions" in body


def test_openapi_schema_describes_the_api(service):
    status, schema = service.json("/openapi.json")
    assert status == 200
    assert {"/api/search", "/api/video/{key}", "/api/health", "/api/admin/reload"} <= set(schema["paths"])
    parameters = {p["name"]: p for p in schema["paths"]["/api/search"]["get"]["parameters"]}
    assert not parameters["q"].get("required") and "like" in parameters and parameters["k"]["schema"]["maximum"] == 100
    assert "post" in schema["paths"]["/api/search"] and "post" in schema["paths"]["/api/search/file"]  # query by vector, by file
    assert "/" not in schema["paths"] and "/thumb/{key}" not in schema["paths"]  # pages are not API


def _raw(port: int, request: bytes, timeout: float = 60) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


HOSTILE = [
    ("/api/search?q=&k=3", 400, "empty"),
    ("/api/search?q=%20%20%20", 400, "empty"),
    ("/api/search?q=%FF%FE", 400, "not UTF-8"),
    ("/api/search?q=caf%C3", 400, "not UTF-8"),
    ("/api/search?q=a%00b", 400, "control character"),
    ("/api/search?q=" + "x" * 1001, 400, "1,001 characters"),
    ("/api/search?q=cat&k=0", 400, "k"),
    ("/api/search?q=cat&k=-1", 400, "k"),
    ("/api/search?q=cat&k=1000000000", 400, "k"),
    ("/api/search?q=cat&k=ten", 400, "k"),
    ("/api/search?k=3", 400, "q"),
    ("/?q=&k=3", 400, "empty"),
    ("/?q=cat&k=0", 400, "k must be a whole number"),
    ("/api/video/no-such-key", 404, "no video with the key"),
    ("/video/no-such-key", 404, "no video with the key"),
    ("/thumb/no-such-key", 404, "no video with the key"),
    ("/frame/clip000/99", 404, "has frames 0 to"),
    ("/frame/clip000/-1", 404, "has frames 0 to"),
    ("/nothing/here", 404, "nothing at"),
] + [
    (prefix + attack, 404, "")
    for prefix in ("/", "/video/", "/thumb/", "/frame/clip000/", "/api/video/", "/api/")
    for attack in ("../../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "..%252F..%252Fetc%252Fpasswd",
                   "....//....//etc/passwd", "%2e%2e%5c%2e%2e%5cetc%5cpasswd")  # fmt: skip
]


@pytest.mark.parametrize("path,status,message", HOSTILE)
def test_hostile_input_gets_a_clear_4xx(service, path, status, message):
    got, headers, body = service.request("GET", path)
    assert got == status, body[:300]
    assert b"root:" not in body  # no file content, whatever the path
    text = body.decode("utf-8", errors="replace")
    if path.startswith("/api/"):
        assert headers["content-type"].startswith("application/json") and message in json.loads(body)["error"]
    else:
        assert headers["content-type"].startswith("text/html") and message in text


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/api/search?q=cat", "/api/health", "/api/video/clip000", "/", "/thumb/clip000"])
def test_other_methods_on_get_routes_are_refused(service, method, path):
    allowed = "GET, POST" if path.startswith("/api/search") else "GET"  # POST /api/search takes a vector
    if method in allowed:
        return
    status, headers, _ = service.request(method, path)
    assert status == 405 and set(headers["allow"].split(", ")) <= set(allowed.split(", ")) and "GET" in headers["allow"]


def test_a_10_mb_query_is_refused_with_a_reason_and_the_server_stays_up(service):
    response = _raw(service.port, b"GET /api/search?q=" + b"a" * (10 * 1024 * 1024) + b"&k=3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and "10,485,760 characters" in json.loads(body)["error"]
    garbage = _raw(service.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n")  # a TLS hello, say
    assert garbage.startswith(b"HTTP/1.1 400")
    assert service.json("/api/health")[0] == 200


def test_slow_clients_do_not_block_others(service):
    """50 connections that send half a request head and then nothing (slowloris): other clients are
    answered meanwhile (the bound only turns a hang into a failure; answers take milliseconds)."""
    idle = []
    try:
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
            sock.sendall(b"GET /api/search?q=slow HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            idle.append(sock)
        for query in QUERIES:
            status, result = service.json(_search_path(query))
            assert status == 200 and result["hits"]
        for sock in idle[:10]:
            sock.sendall(b"a")  # still trickling
        assert service.json("/api/health")[0] == 200
    finally:
        for sock in idle:
            sock.close()


def test_concurrent_clients_get_the_single_query_results(service):
    """16 clients on 127.0.0.1 for 4 s (both bounded): no error responses, every answer equal to the
    query's answer alone, and concurrent queries were encoded together."""
    alone = {}
    for query in QUERIES:
        status, result = service.json(_search_path(query))
        assert status == 200
        alone[query] = result
    failures, answered, batch_sizes = [], [], []
    deadline = time.monotonic() + 4.0

    def client(number: int) -> None:
        try:
            ask(number)
        except Exception as error:  # noqa: BLE001 - a client that fails is the test's failure
            failures.append(repr(error))

    def ask(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=60)
        sent = 0
        while time.monotonic() < deadline and sent < 500:
            query = QUERIES[(number + sent) % len(QUERIES)]
            connection.request("GET", _search_path(query))
            response = connection.getresponse()
            body = response.read()
            sent += 1
            if response.status != 200:
                failures.append((response.status, body[:200]))
                continue
            result = json.loads(body)
            batch_sizes.append(result["batch_size"])
            if not _same_ranking(result, alone[query]):
                failures.append((query, result["hits"], alone[query]["hits"]))
            answered.append(query)
        connection.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:3]
    assert len(answered) >= 16 and max(batch_sizes) > 1


def start_keyed_service(collection, folder):
    """A service with --api-key over a copy of the index (the reload test changes it)."""
    shutil.copytree(collection / "index", folder / "index")
    return Service(folder / "index", "--api-key", API_KEY, "--host", "127.0.0.1"), folder / "index"


@pytest.fixture(scope="module")
def keyed_service(search_collection, tmp_path_factory):
    """One keyed service for the tests that only send requests (each start costs seconds)."""
    running, index = start_keyed_service(search_collection, tmp_path_factory.mktemp("keyed"))
    yield running, index
    running.stop()


@pytest.fixture
def reloadable_keyed_service(search_collection, tmp_path):
    """A keyed service of the test's own: the reload test rebuilds its index."""
    running, index = start_keyed_service(search_collection, tmp_path)
    yield running, index
    running.stop()


def test_the_api_key_guards_every_route(keyed_service):
    service, _ = keyed_service
    for path in ["/", "/api/health", _search_path("cat"), "/api/video/clip000", "/thumb/clip000", "/video/clip000", "/openapi.json"]:
        assert service.request("GET", path)[0] == 401, path
        assert service.request("GET", path, {"Authorization": "Bearer wrong-key-123"})[0] == 401, path
        assert service.request("GET", path, {"Authorization": f"Bearer {API_KEY}"})[0] == 200, path
        assert service.request("GET", path, {"X-API-Key": API_KEY})[0] == 200, path
    assert service.request("POST", "/api/admin/reload")[0] == 401


def test_a_key_in_the_page_url_is_redirected_away_and_becomes_a_derived_cookie(keyed_service):
    """?api_key= on the page: 303 to the same URL without it, the cookie holds a token (not the key)
    that opens the page and its images but not the JSON API; a wrong key in the URL is refused."""
    from search.api_key import page_token

    service, _ = keyed_service
    status, headers, _ = service.request("GET", f"/?q=red+circle&api_key={API_KEY}&k=3")
    assert status == 303 and headers["location"] == "/?q=red+circle&k=3" and headers["cache-control"] == "no-store"
    cookie = headers["set-cookie"].split(";")[0]
    name, value = cookie.split("=", 1)
    assert API_KEY not in headers["set-cookie"] and value == page_token(API_KEY) and "HttpOnly" in headers["set-cookie"]
    assert "SameSite=strict" in headers["set-cookie"]
    for path in ["/?q=red+circle&k=3", "/thumb/clip000", "/video/clip000", "/frame/clip000/0"]:
        assert service.request("GET", path, {"Cookie": cookie})[0] == 200, path  # the page and its images load
    assert service.request("GET", "/api/health", {"Cookie": cookie})[0] == 401  # the JSON API wants the header
    assert service.request("GET", "/", {"Cookie": f"{name}={API_KEY}"})[0] == 401  # the raw key is not a cookie
    assert service.request("GET", "/video/clip000?api_key=wrong-key-123")[0] == 401
    status, headers, _ = service.request("GET", f"/video/clip000?api_key={API_KEY}")
    assert status == 303 and headers["location"] == "/video/clip000"


def test_the_json_api_takes_the_key_in_a_header_only(keyed_service):
    service, _ = keyed_service
    for path in [f"/api/health?api_key={API_KEY}", f"{_search_path('cat')}&api_key={API_KEY}"]:
        status, _, body = service.request("GET", path)
        assert status == 401 and "header" in json.loads(body)["error"], path
        # not even with the header as well: a key in an API URL is a leak to refuse, not to forgive
        assert service.request("GET", path, {"X-API-Key": API_KEY})[0] == 401, path
    assert service.request("POST", f"/api/admin/reload?api_key={API_KEY}")[0] == 401


def test_the_key_never_reaches_a_log_line(keyed_service):
    """Every way a key can be sent, right or wrong; then the service's whole output (uvicorn's access
    log included) is read: the key appears nowhere, and the access lines show [redacted]."""
    service, _ = keyed_service
    service.request("GET", f"/?api_key={API_KEY}")
    service.request("GET", f"/api/health?api_key={API_KEY}")
    service.request("GET", f"/api/search?q=cat&api_key={API_KEY}", {"X-API-Key": API_KEY})
    service.request("GET", "/api/health", {"Authorization": f"Bearer {API_KEY}"})
    service.request("GET", "/nothing/here?API_KEY=" + API_KEY)
    deadline = time.monotonic() + 10
    while sum("api_key=" in line.lower() for line in service.stdout_lines + service.stderr_lines) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    logged = "".join(service.stdout_lines + service.stderr_lines)
    assert API_KEY not in logged
    assert logged.count("api_key=[redacted]") + logged.count("API_KEY=[redacted]") >= 4, logged[-2000:]


def test_reload_without_a_key_is_refused(service):
    status, _, body = service.request("POST", "/api/admin/reload")
    assert status == 403 and "--api-key" in json.loads(body)["error"]


def test_the_index_is_swapped_without_a_restart(search_collection, reloadable_keyed_service, tmp_path):
    """The index is rebuilt smaller, then appended to by search.index; POST /api/admin/reload and SIGHUP
    each serve the new one once ready, while searches keep being answered; a broken index is refused
    and the old one keeps serving."""
    collection = search_collection
    service, index = reloadable_keyed_service
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert service.json("/api/health", auth)[1]["videos"] == 8
    smaller = tmp_path / "smaller"
    shards = sorted(str(p) for p in (collection / "shards").glob("shard-*.tar"))
    assert index_main(["--checkpoint", str(collection / "run"), "--shards", "{" + ",".join(shards[:2]) + "}", "--out", str(smaller)]) == 0
    shutil.rmtree(index)
    shutil.copytree(smaller, index)
    errors, stop = [], threading.Event()

    def keep_searching() -> None:
        while not stop.is_set():
            status, _, body = service.request("GET", _search_path("a red circle"), auth)
            if status != 200:
                errors.append((status, body[:200]))

    searching = threading.Thread(target=keep_searching)
    searching.start()
    try:
        status, _, body = service.request("POST", "/api/admin/reload", auth)
        assert status == 200 and json.loads(body)["videos"] == 4 and json.loads(body)["reloads"] == 1
        kept = {VideoIndex(str(smaller)).record(row)["key"] for row in range(4)}
        assert {hit["key"] for hit in service.json(_search_path("circle", 8), auth)[1]["hits"]} == kept
        assert index_main(["--checkpoint", str(collection / "run"), "--shards", str(collection / "shards"), "--out", str(index)]) == 0
        os.kill(service.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while service.json("/api/health", auth)[1]["videos"] != 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert service.json("/api/health", auth)[1]["videos"] == 8
        (index / "index.json").write_text("{not json")
        status, _, body = service.request("POST", "/api/admin/reload", auth)
        assert status == 500 and "index.json" in json.loads(body)["error"]
        assert service.json("/api/health", auth)[1]["videos"] == 8  # still the last good one
    finally:
        stop.set()
        searching.join(timeout=60)
    assert not errors, errors[:3]


def test_the_listening_socket_says_it_is_tcp():
    """asyncio turns Nagle off (TCP_NODELAY) only on sockets whose protocol is IPPROTO_TCP; a socket made
    with protocol 0 made every kept-alive response wait for the client's delayed ACK (44 ms per
    /api/health under wrk instead of 0.5 ms: BENCHMARKS.md)."""
    from search.serve import listening_socket

    with listening_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP and sock.type == socket.SOCK_STREAM


def test_listening_beyond_this_machine_warns(search_collection):
    collection = search_collection
    process = subprocess.Popen([sys.executable, "-m", "search.serve", "--index", str(collection / "index"), "--host", "0.0.0.0", "--port", "0"],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        assert "http://" in process.stdout.readline()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    assert "warning: listening on 0.0.0.0" in stderr and "no --api-key" in stderr
