"""How hard a shard read tries before it gives up: its own module because commands' argument
parsers read its defaults, and shards/reader.py imports webdataset (and with it torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadPolicy:
    retries: int = 5  # further attempts after the first failure, per read
    backoff_s: float = 1.0  # first wait; doubles per attempt, capped at 30 s
    timeout_s: float = 60.0  # connect and socket-read timeout for object stores
