"""The CLIP4Clip preprocessing and loading that the benchmarks compare against, in one place.

compress_3fps follows ``preprocess/compress_video.py`` (ffmpeg ``-r 3``, short side 224, with
the aspect ratio kept for portrait too); frames_each_second follows ``rawvideo_util.py`` at
feature_framerate 1 (seek to ``second * fps`` and read one frame, stop at the first failure).
"""

from __future__ import annotations

import subprocess

import cv2
import numpy as np

from pipeline.ffmpeg_binary import ffmpeg_executable


def compress_3fps(source: str, target: str) -> None:
    scale = "scale='if(gte(iw,ih),-2,224)':'if(gte(iw,ih),224,-2)'"
    subprocess.run(
        [ffmpeg_executable(), "-nostdin", "-y", "-loglevel", "error", "-i", source, "-filter:v", scale, "-map", "0:v", "-r", "3", target],
        check=True,
    )


def frames_each_second(path: str) -> list[np.ndarray]:
    """RGB frames: the first of every second of a (3 fps) video, decoded with OpenCV."""
    capture = cv2.VideoCapture(path)
    fps = int(capture.get(cv2.CAP_PROP_FPS))
    seconds = (int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) + fps - 1) // fps
    frames = []
    for second in range(seconds + 1):
        capture.set(cv2.CAP_PROP_POS_FRAMES, second * fps)
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames
