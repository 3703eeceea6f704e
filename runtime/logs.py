"""Rank-aware logging and progress for people; machine-readable records stay in metrics.jsonl.

Rank 0 logs at INFO, the other ranks only warnings and errors (each prefixed with its rank), so
a job's output reads like one process's. Progress bars (tqdm) are shown on rank 0 when the
output is a terminal; in batch logs (Slurm, CI) they are off and a one-line summary is logged
every ``--log-every-steps`` instead.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

LOGGER_NAME = "clip4clip"


class _CurrentStream(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` (or ``sys.stderr``) is at the time (pytest and tqdm swap them)."""

    def __init__(self, name: str = "stdout") -> None:
        self.name_of_stream = name
        super().__init__()

    @property
    def stream(self):  # noqa: D102
        return getattr(sys, self.name_of_stream)

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging(rank: int = 0, stream: str = "stdout") -> logging.Logger:
    """The project's logger for this rank. ``stream="stderr"`` when stdout carries a machine-readable answer
    (``--json``): a script piping stdout into a JSON parser then sees only that."""
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"stream is stdout or stderr, not {stream!r}")
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = _CurrentStream(stream)
    handler.setFormatter(logging.Formatter("%(message)s" if rank == 0 else f"[rank {rank}] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


class _DropMessage(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


@contextmanager
def weights_follow():
    """Silences open_clip's "No pretrained weights loaded ... initialized randomly" while a model
    is built whose weights are loaded right after (resume, evaluation): there it is untrue."""
    drop = _DropMessage("No pretrained weights loaded")
    root = logging.getLogger()
    root.addFilter(drop)
    for handler in root.handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        for handler in root.handlers:
            handler.removeFilter(drop)


def progress_enabled(is_main: bool) -> bool:
    return is_main and sys.stderr.isatty()
