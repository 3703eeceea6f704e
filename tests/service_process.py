"""``python -m search.serve`` as a test starts it: its own process group, a free port of 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import REPO_ROOT


class Service:
    """``python -m search.serve`` in a process group of its own, on a free port of 127.0.0.1."""

    def __init__(self, index: Path, *extra: str, env: dict | None = None) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "search.serve", "--index", str(index), "--port", "0", "--rerank-topk", "4",
                                         "--query-encoder", "fp32", *extra],  # exact, as the searchers the tests compare with; extra may override
                                        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                                        env=env)  # fmt: skip
        line = self.process.stdout.readline()
        if "http://" not in line:
            self.stop()
            raise AssertionError(f"the service did not start: {line}{self.process.stderr.read()}")
        self.port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        # both pipes drained (uvicorn's access log goes to stdout): a full pipe would block the server
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        for pipe, lines in ((self.process.stdout, self.stdout_lines), (self.process.stderr, self.stderr_lines)):
            threading.Thread(target=lambda pipe=pipe, lines=lines: lines.extend(pipe), daemon=True).start()

    def request(self, method: str, path: str, headers: dict | None = None, timeout: float = 60, body: bytes | None = None) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def json(self, path: str, headers: dict | None = None) -> tuple[int, dict]:
        status, _, body = self.request("GET", path, headers)
        return status, json.loads(body)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
