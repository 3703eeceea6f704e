"""A real multi-node Ray cluster on this machine for the tests: ``ray start --head`` and worker nodes.

Each node gets its own loopback address (127.0.0.2, .3, ...): Ray turns 127.0.0.1 into the
machine's outward address, but keeps any other address of 127.0.0.0/8, so all traffic stays on
loopback. Nodes are separate raylets with their own worker processes, so killing one is what
losing a machine is to Ray. Processes are found through /proc: a node is every process whose
command line names its address, and all their descendants (the workers, whose titles Ray
rewrites to ``ray::...``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",  # a test cluster on loopback; real clusters keep Ray's token
    "RAY_health_check_period_ms": "500",  # a killed node is declared dead in seconds, not half a minute
    "RAY_health_check_failure_threshold": "4",
    "RAY_health_check_initial_delay_ms": "500",
}
OBJECT_STORE_BYTES = str(100 * 1024 * 1024)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        found[int(entry)] = (parent, cmdline)
    return found


def _names_node(cmdline: str, ip: str) -> bool:
    """Ray's node processes carry their node's address as --node-ip-address or --node_ip_address."""
    return f"node-ip-address={ip}" in cmdline or f"node_ip_address={ip}" in cmdline


def _with_descendants(roots: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    members, grew = set(roots), True
    while grew:
        children = {pid for pid, (parent, _) in table.items() if parent in members and pid not in members}
        members |= children
        grew = bool(children)
    return members


class LocalRayCluster:
    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Unix socket paths must stay short
        self.port = free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.env = os.environ | RAY_ENV
        self.node_ips: list[str] = []

    def _ray_start(self, *args: str) -> None:
        result = subprocess.run(["ray", "start", "--temp-dir", self.temp_dir, "--object-store-memory", OBJECT_STORE_BYTES, *args],
                                env=self.env, capture_output=True, text=True, timeout=120)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def start_head(self, num_cpus: int) -> None:
        self._ray_start("--head", "--node-ip-address", "127.0.0.2", "--port", str(self.port), "--num-cpus", str(num_cpus),
                        "--include-dashboard=false", "--disable-usage-stats")  # fmt: skip
        self.node_ips.append("127.0.0.2")

    def add_node(self, num_cpus: int) -> str:
        ip = f"127.0.0.{len(self.node_ips) + 2}"
        self._ray_start("--address", self.address, "--node-ip-address", ip, "--num-cpus", str(num_cpus))
        self.node_ips.append(ip)
        return ip

    def node_processes(self, ip: str) -> set[int]:
        table = _processes()
        roots = {pid for pid, (_, cmdline) in table.items() if _names_node(cmdline, ip)}
        return _with_descendants(roots, table) - {os.getpid()}

    def kill_node(self, ip: str) -> int:
        """SIGKILL to the node's raylet, its agents, log monitor and every worker: a machine lost."""
        pids = self.node_processes(ip)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def processes_holding(self, fragment: str) -> dict[int, str]:
        """pid -> path for every open file whose path contains ``fragment`` (a shard being written)."""
        held = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                for fd in os.listdir(f"/proc/{entry}/fd"):
                    target = os.readlink(f"/proc/{entry}/fd/{fd}")
                    if fragment in target:
                        held[int(entry)] = target
            except OSError:
                continue
        return held

    def shutdown(self) -> None:
        table = _processes()
        roots = {pid for pid, (_, cmdline) in table.items() if self.temp_dir in cmdline}
        for ip in self.node_ips:
            roots |= {pid for pid, (_, cmdline) in table.items() if _names_node(cmdline, ip)}
        for pid in _with_descendants(roots, table) - {os.getpid()}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def slow_ffmpeg(folder: Path, delay_s: float, crash_on: str | None = None) -> Path:
    """An ffmpeg that waits ``delay_s`` before each decode (a slow disk or a long clip), and, with
    ``crash_on``, kills the process that called it when the input names that string (a decoder
    bug taking its worker down, as an out-of-memory kill would)."""
    from pipeline.ffmpeg_binary import ffmpeg_executable

    real = ffmpeg_executable()
    crash = f'case "$*" in *{crash_on}*) kill -9 $PPID; exit 1;; esac\n' if crash_on else ""
    script = folder / f"ffmpeg-slow-{delay_s}{'-crash' if crash_on else ''}"
    script.write_text(f'#!/bin/sh\ncase "$*" in *-version*) exec "{real}" "$@";; esac\n{crash}sleep {delay_s}\nexec "{real}" "$@"\n')
    script.chmod(0o755)
    return script
