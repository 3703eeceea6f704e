"""Finds the ffmpeg executable.

A system ffmpeg on PATH wins because cluster images usually ship one built with the
site's codecs; otherwise the static binary bundled by imageio-ffmpeg is used so that a
plain ``pip install`` is enough (no root, no apt). ``PIPELINE_FFMPEG`` overrides both,
for sites that keep a custom build outside PATH.
"""

from __future__ import annotations

import functools
import os
import shutil


@functools.lru_cache(maxsize=1)
def ffmpeg_executable() -> str:
    override = os.environ.get("PIPELINE_FFMPEG")
    if override:
        if not os.path.isfile(override):
            raise FileNotFoundError(f"PIPELINE_FFMPEG points to {override!r}, which is not a file")
        return override
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.lru_cache(maxsize=1)
def ffmpeg_major_version() -> int:
    """Major version of the chosen binary; ffmpeg 5 renamed ``-vsync`` to ``-fps_mode``.

    Unknown builds (git snapshots print ``N-xxxxx``) are assumed current.
    """
    import re
    import subprocess

    banner = subprocess.run([ffmpeg_executable(), "-hide_banner", "-version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"ffmpeg version n?(\d+)\.", banner)
    return int(match.group(1)) if match else 99
