"""Open a video file and say what it holds, or why it cannot be read."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import av

from . import storage


_EMPTY = {"frames": None, "fps": None, "width": None, "height": None, "duration": None,
          "size_bytes": None, "status": "ok", "error": None}


def probe(path) -> dict:
    """frames, fps, width, height, duration, size_bytes, and `status`/`error` (ok or unreadable).
    `path` is a local path, or a location on a store (pipeline.storage), read by ranged reads."""
    loc = storage.location(path)
    if storage.is_remote(loc):
        return _probe_remote(loc)
    path = str(path)
    info = dict(_EMPTY)
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return {**info, "status": "unreadable", "error": f"dangling symlink (to {os.readlink(path)})"}
        reason = "symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or str(exc))
        return {**info, "status": "unreadable" if exc.errno != errno.ENOENT else "missing", "error": reason}
    if not stat.S_ISREG(st.st_mode):  # never open a FIFO or a device: a read could block forever
        from .sources.base import not_a_file

        return {**info, "status": "unreadable", "error": not_a_file(Path(path))}
    info["size_bytes"] = st.st_size
    return _probe_container(path, info)


def _probe_remote(loc) -> dict:
    try:
        meta = loc.fs.info(loc.path)
    except FileNotFoundError:
        return {**_EMPTY, "status": "missing", "error": "no such object"}
    except OSError as exc:
        return {**_EMPTY, "status": "unreadable", "error": str(exc)}
    if meta.get("type") != "file":
        return {**_EMPTY, "status": "unreadable", "error": "not a regular file (folder)"}
    # the header and the first frame only, in small ranged reads (a default block can be 50 MB)
    with loc.fs.open(loc.path, "rb", block_size=1 << 20) as f:
        return _probe_container(f, {**_EMPTY, "size_bytes": meta.get("size")})


def _probe_container(source, info: dict) -> dict:
    """Fill `info` from the container at `source` (a path or a binary file object)."""
    if info["size_bytes"] == 0:
        return {**info, "status": "unreadable", "error": "empty file (0 bytes)"}
    try:
        with av.open(source, metadata_errors="ignore") as container:
            if not container.streams.video:
                return {**info, "status": "unreadable", "error": "no video stream"}
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            info["fps"] = float(rate) if rate else None
            info["width"], info["height"] = stream.codec_context.width, stream.codec_context.height
            if stream.duration is not None and stream.time_base:
                info["duration"] = float(stream.duration * stream.time_base)
            elif container.duration:
                info["duration"] = container.duration / av.time_base
            info["frames"] = stream.frames or (
                round(info["duration"] * info["fps"]) if info["duration"] and info["fps"] else None)
            first = next(container.decode(stream), None)
            if first is None:
                return {**info, "status": "unreadable", "error": "no decodable frame"}
            if round((getattr(first, "rotation", 0) or 0) / 90) % 2:  # shown sideways: report as displayed
                info["width"], info["height"] = info["height"], info["width"]
    except (av.FFmpegError, OSError, ValueError, IndexError, ZeroDivisionError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return {**info, "status": "unreadable", "error": f"not a readable video ({reason})"}
    return info


__all__ = ["probe"]
