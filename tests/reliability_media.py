"""Odd but real video files for tests/test_reliability.py, each written by a real encoder (PyAV).

Every maker takes the target path and writes one file (or link, FIFO, folder) there. Frames with
a face come from the project's real footage (`pipeline.sample.Clip`), so a case that should yield
face crops can be told apart from one that silently yields none.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import av
import cv2
import numpy as np

from mesodata.pipeline import footage


@functools.cache
def face_frames(n: int = 6) -> tuple[np.ndarray, ...]:
    """Real talking-head frames (352x288 RGB) in which the pipeline finds a face."""
    from mesodata.pipeline.sample import Clip

    return tuple(Clip("carphone", 0).frames(n))


def no_face_frames(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """A real photograph without a face (skimage's coffee), panned, at `size` (w, h)."""
    from skimage import data

    return footage.pan(data.coffee(), n, size, seed=1)


def encode(path: Path, frames, *, codec: str = "libx264", pix_fmt: str = "yuv420p", fmt: str | None = None,
           rotation: int | None = None, fps: int = 25) -> Path:
    """Encode RGB (h, w, 3) or grayscale (h, w) uint8 frames with any codec/pixel format/container."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if rotation is not None:
            stream.set_display_rotation(rotation)  # display matrix side data, as phones write it
        for f in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="gray" if f.ndim == 2 else "rgb24")
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# --- the makers: one per case of test_reliability.VIDEO_CASES ----------------------------------------
def zero_bytes(p: Path):
    p.write_bytes(b"")


def not_a_video(p: Path):
    p.write_bytes(b"<html><body>404 Not Found</body></html>\n" * 50)


def truncated(p: Path):
    footage.write_video(p, face_frames(30))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 6 // 10])


def symlink_to_itself(p: Path):
    os.symlink(p.name, p)


def symlink_loop_of_two(p: Path):
    other = p.with_name(p.stem + "_other.mp4")
    os.symlink(other.name, p)
    os.symlink(p.name, other)


def dangling_symlink(p: Path):
    os.symlink("no_such_video.mp4", p)


def fifo(p: Path):
    os.mkfifo(p)  # nobody ever writes: opening it for reading would block forever


def folder(p: Path):
    p.mkdir()
    (p / "inner.mp4").write_bytes(b"")


def one_frame(p: Path):
    footage.write_video(p, face_frames(1))


def size_1x1_mpeg4(p: Path):
    encode(p, [np.full((1, 1, 3), 120, np.uint8)] * 3, codec="mpeg4", fmt="mp4")


def size_1x1_ffv1_matroska(p: Path):  # a Matroska file named .mp4: the content decides
    encode(p, [np.full((1, 1, 3), 120, np.uint8)] * 3, codec="ffv1", pix_fmt="yuv444p", fmt="matroska")


def size_2x2_h264(p: Path):
    encode(p, [np.full((2, 2, 3), 120, np.uint8)] * 3)


def size_4000x3000(p: Path):
    encode(p, [cv2.resize(f, (4000, 3000), interpolation=cv2.INTER_LINEAR) for f in face_frames(2)])


def rotated_display_matrix(p: Path):
    """Stored sideways (as a phone held upright records), with the display matrix saying so."""
    encode(p, [np.ascontiguousarray(np.rot90(f, -1)) for f in face_frames(3)], rotation=90)


def grayscale(p: Path):
    encode(p, [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in face_frames(3)], pix_fmt="gray")


def ten_bit(p: Path):
    try:
        encode(p, list(face_frames(3)), pix_fmt="yuv420p10le")
    except (av.FFmpegError, ValueError):  # a libx264 without high bit depth: FFV1 holds 10 bits too
        p.unlink(missing_ok=True)
        encode(p, list(face_frames(3)), codec="ffv1", pix_fmt="yuv420p10le", fmt="matroska")


def write_partial_into(fifo_path: Path, video: Path, fraction: float = 0.5):
    """Open `fifo_path` for writing and feed it the first `fraction` of `video`, then stall (the
    returned file object keeps the write end open: a reader waits for more, as on a hung NFS)."""
    fd = os.open(fifo_path, os.O_RDWR)  # O_RDWR: does not wait for a reader to appear
    data = video.read_bytes()
    os.write(fd, data[: int(len(data) * fraction)])
    return fd
