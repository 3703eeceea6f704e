"""An HTTP proxy in front of the moto S3 server that misbehaves on request.

Tests point AWS_ENDPOINT_URL at the proxy and add faults for object keys: ``reset`` sends the
headers and half of the body, then resets the TCP connection (what a dying load balancer or
a spot node losing its network does mid-download); ``slow`` waits before answering (a stalled
connection); ``missing`` answers 404. Each fault fires a given number of times (or forever),
so tests can check both "retried, then fine" and "retried, then a clear error".
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FOREVER = 1 << 30


@dataclass
class Fault:
    key_part: str  # applies to GETs whose path contains this
    kind: str  # "reset", "slow" or "missing"
    times: int = 1
    delay_s: float = 5.0
    fired: int = 0


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.gets: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._take_fault(self.command, self.path)
                if fault and fault.kind == "slow":
                    time.sleep(fault.delay_s)
                if fault and fault.kind == "missing":
                    payload = b"<?xml version='1.0'?><Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"
                    self.send_response(404)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None  # HEAD: the object's size
                self.send_header("Content-Length", length or str(len(payload)))
                self.end_headers()
                if fault and fault.kind == "reset" and self.command == "GET" and len(payload) > 1:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def finish(self) -> None:
                try:
                    super().finish()
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        if method != "GET":
            return None
        with self.lock:
            self.gets.append(path)
            for fault in self.faults:
                if fault.key_part in path and fault.fired < fault.times:
                    fault.fired += 1
                    return fault
        return None

    def add(self, key_part: str, kind: str, times: int = 1, delay_s: float = 5.0) -> Fault:
        fault = Fault(key_part, kind, times, delay_s)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.gets.clear()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
