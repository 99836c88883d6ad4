"""Frame-exact sampling of a video: plan which frames to take, decode just those, on a deadline.

OpenCV's `CAP_PROP_POS_FRAMES` seek lands on the wrong frame of H.264 streams with B-frames, so
frames are decoded sequentially with PyAV and numbered in presentation order as the decoder
returns them: frame `i` is the `i`-th frame out of the decoder, the same count the manifest's
`frames` column holds. Decoding stops after the last wanted frame, and only wanted frames are
handed on (the caller converts them; nothing else is ever turned into an array).

Frames no other frame refers to (most B-frames) need not be decoded unless wanted: the decoder is
told to skip them (`skip_frame`, per packet), and each frame that does come out is numbered by its
timestamp's rank among the stream's packets, read beforehand by demuxing alone. That is the same
number, and the same pixels, as the sequential count whenever every packet gives one frame in
timestamp order; anything else seen on the way (a packet without a timestamp, a frame out of order,
a wanted frame that does not come out, an error, an early end) falls back to sequential decoding,
which then has the last word. On x264's defaults this decodes 0.55-0.75x the CPU.

The deadline is a budget of decoding time (see `Deadline`): a merely slow decode stops at the next
frame past it; a decoder stuck in a blocking read (a stalled network file system, a FIFO that never
fills) is abandoned there too, SIGALRM interrupting the read and PyAV's interrupt callback aborting
it. A decoder that never returns from C code cannot be stopped in-process: the executor kills its
worker (pipeline.watchdog).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import stat
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import av

from . import watchdog

__all__ = ["plan_indices", "count_frames", "presentation_order", "DecodeTimeout", "Deadline", "SampledFrame", "FrameSampler"]


def plan_indices(n_frames: int, fps: float | None = None, *, frames: int | None = 32,
                 every_seconds: float | None = None, stride: int | None = None) -> list[int]:
    """The frame indices to sample from a video of `n_frames` frames, sorted and unique.

    `stride=K` takes frames 0, K, 2K, ...; `every_seconds=S` one frame every S seconds (needs
    `fps`); otherwise `frames=N` indices evenly spaced from the first to the last frame (all
    frames when the video has fewer than N).
    """
    if n_frames <= 0:
        return []
    if stride is not None and every_seconds is not None:
        raise ValueError("give at most one of stride and every_seconds")
    if stride is not None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        return list(range(0, n_frames, int(stride)))
    if every_seconds is not None:
        if not every_seconds > 0:
            raise ValueError(f"every_seconds must be > 0, got {every_seconds}")
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise ValueError("every_seconds needs the video's frame rate, which is unknown")
        step = every_seconds * fps
        count = int(math.floor((n_frames - 1) / step + 1e-9)) + 1
        return sorted({min(n_frames - 1, int(round(k * step))) for k in range(count)})
    if frames is None or frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if n_frames <= frames:
        return list(range(n_frames))
    if frames == 1:
        return [0]
    return sorted({int(round(k * (n_frames - 1) / (frames - 1))) for k in range(frames)})


def count_frames(path: str, timeout: float | None = None) -> int:
    """Frames in the first video stream, counted by demuxing (no decoding): for files whose
    header does not say."""
    with av.open(path, metadata_errors="ignore", timeout=timeout) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size)


def presentation_order(path: str, timeout: float | None = None) -> dict[int, int] | None:
    """The presentation index of each frame of the first video stream by its timestamp, from the
    packets alone (no decoding); None when timestamps cannot give the order (one missing or
    repeated), or when the file cannot be read twice (not a regular file: a FIFO would be drained)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    with av.open(path, metadata_errors="ignore", timeout=timeout) as container:
        if not container.streams.video:
            return None
        pts = [p.pts for p in container.demux(container.streams.video[0]) if p.size]
    if any(t is None for t in pts) or len(set(pts)) != len(pts):
        return None
    return {t: i for i, t in enumerate(sorted(pts))}


class DecodeTimeout(Exception):
    """A video's decoding ran past its deadline."""


class Deadline:
    """A video's decode-time budget: only the time spent decoding counts (opening, demuxing and
    decoding, between `resume()` and `pause()`, or inside `with d.running():`), not loading models,
    cropping faces or waiting for the face thread: a slow machine or a cold worker must not make a
    healthy video time out.

    `with Deadline(seconds) as d:` ... `d.check()` between frames raises DecodeTimeout once the
    budget is spent. In the main thread, SIGALRM also fires when it runs out (and every second
    after) to break a read that blocks; elsewhere only `check()` applies. A decoder that never
    returns to Python is for the executor to kill: while decoding, the deadline is published to
    it (pipeline.watchdog)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.spent = 0.0
        self._since: float | None = None  # when the running stretch began; None while paused
        self._old = None
        self._armed = False  # our SIGALRM handler is installed
        self._fired = False

    def elapsed(self) -> float:
        """Seconds of decoding so far."""
        return self.spent + (time.monotonic() - self._since if self._since is not None else 0.0)

    def expired(self) -> bool:
        return self.seconds is not None and self.elapsed() >= self.seconds

    def check(self) -> None:
        if self.expired():
            raise DecodeTimeout(f"decoding abandoned after the {self.seconds:g} s decode timeout")

    def resume(self) -> None:
        """Decoding starts (again): the clock runs, the alarm and the executor's watch are set."""
        if self._since is not None or self.seconds is None:
            return
        self._since = time.monotonic()
        left = max(self.seconds - self.spent, 1e-3)
        watchdog.arm(self._since + left, self.seconds)
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, left, 1.0)

    def pause(self) -> None:
        """Decoding stops (a frame handed on, or done): the clock and the alarm stop."""
        if self._since is None:
            return
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
        watchdog.disarm()
        self.spent += time.monotonic() - self._since
        self._since = None

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """`with d.running():` counts the block as decoding (nested: counted once)."""
        if self._since is not None:
            yield
            return
        self.resume()
        try:
            yield
        finally:
            self.pause()

    def _on_alarm(self, signum, frame):
        # Raise once; later alarms only interrupt blocking reads, which PyAV's own read timeout
        # (the same seconds, passed to av.open) then aborts.
        if self._armed and not self._fired and self._since is not None and self.expired():
            self._fired = True
            self.check()

    def __enter__(self) -> "Deadline":
        if self.seconds is not None and threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGALRM, self._on_alarm)
            except ValueError:  # not allowed here (e.g. an embedded interpreter)
                self._old = None
            else:
                self._armed = True
        return self

    def __exit__(self, *exc) -> None:
        self.pause()
        if self._armed:
            self._armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old if self._old is not None else signal.SIG_DFL)


@dataclass
class SampledFrame:
    index: int  # presentation order, from 0
    timestamp: float | None  # seconds, from the frame's own pts
    frame: av.VideoFrame


MIN_UNWANTED_TO_SKIP = 16  # below this, skipping saves less than its extra open and demux cost


class FrameSampler:
    """Iterate the wanted frames of a video, exactly, decoding no further than the last one and, by
    default, skipping the unwanted frames no other frame refers to (`skip_unwanted`).

    After iteration: `decoded` frames were passed in presentation order, `skipped` of them without
    being decoded (0 when decoding was sequential); `error` says why decoding stopped early (None
    when it did not fail); `ended` is True when the stream ran out before the last wanted frame (a
    truncated file, or a frame count that overstated the stream).
    """

    def __init__(self, path: str, indices: Sequence[int], *, deadline: Deadline | None = None,
                 threads: bool = True, skip_unwanted: bool = True):
        self.path = path
        self.indices = sorted(set(int(i) for i in indices))
        self.deadline = deadline or Deadline(None)
        self.threads = threads
        self.skip_unwanted = skip_unwanted
        self.decoded = 0
        self.skipped = 0
        self.error: str | None = None
        self.ended = False
        self.width = self.height = None
        self.fps: float | None = None

    def __iter__(self) -> Iterator[SampledFrame]:
        if not self.indices:
            return
        handed: set[int] = set()  # indices already yielded, by the skipping pass
        self.deadline.resume()
        try:
            if self._worth_skipping() and (yield from self._skipping(handed)):
                return
            self.decoded = self.skipped = 0
            yield from self._sequential(handed)
        except DecodeTimeout as exc:
            self.error = f"{exc} (at frame {self.decoded})"
        except (av.FFmpegError, OSError, ValueError, EOFError, IndexError, ZeroDivisionError, MemoryError) as exc:
            if self.deadline.expired():  # PyAV's interrupt callback turned the alarm into an FFmpeg error
                self.error = (f"decoding abandoned after the {self.deadline.seconds:g} s decode timeout "
                              f"(at frame {self.decoded})")
            else:
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                self.error = f"{type(exc).__name__} at frame {self.decoded}: {reason}"
        finally:
            self.deadline.pause()

    def _worth_skipping(self) -> bool:
        # Skipping costs a second open and a demux of the file: a few milliseconds, repaid only when
        # there are unwanted frames to skip before the last wanted one.
        unwanted = self.indices[-1] + 1 - len(self.indices)
        return self.skip_unwanted and unwanted >= MIN_UNWANTED_TO_SKIP

    def _open(self):
        return av.open(self.path, metadata_errors="ignore", timeout=self.deadline.seconds)

    def _video_stream(self, container):
        stream = container.streams.video[0]
        if self.threads:
            stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else None
        return stream

    def _hand_on(self, index: int, frame: av.VideoFrame, tb) -> SampledFrame:
        self.width, self.height = frame.width, frame.height
        ts = float(frame.pts * tb) if frame.pts is not None and tb else (
            index / self.fps if self.fps else None)
        return SampledFrame(index, ts, frame)

    def _skipping(self, handed: set[int]):
        """Decode skipping unwanted frames that nothing refers to; True when every wanted frame was
        handed on, False to let the sequential pass take over (from the start, handing on only the
        frames not yet handed on). An error here is not recorded: the sequential pass meets it."""
        try:
            order = presentation_order(self.path, self.deadline.seconds)
            if order is None:
                return False
            wanted = set(self.indices)
            pending = iter(self.indices)
            nxt = next(pending)
            last = self.indices[-1]
            previous = -1  # the last index out of the decoder: they must come in order, from 0
            came_out = 0
            with self._open() as container:
                stream = self._video_stream(container)
                tb = stream.time_base
                codec = stream.codec_context
                for packet in container.demux(stream):
                    if packet.size:  # decode in full until the first frame is out, and the wanted
                        full = previous < 0 or order.get(packet.pts) in wanted
                        codec.skip_frame = "DEFAULT" if full else "NONREF"
                    for frame in packet.decode():
                        self.deadline.check()
                        index = order.get(frame.pts)
                        if index is None or index <= previous or (previous < 0 and index != 0) or index > nxt:
                            return False  # out of order, or a wanted frame did not come out
                        previous = index
                        came_out += 1
                        self.decoded, self.skipped = index + 1, index + 1 - came_out
                        if index == nxt:
                            self.deadline.pause()  # the consumer's time is not decoding
                            yield self._hand_on(index, frame, tb)
                            handed.add(index)
                            if index >= last:
                                return True
                            self.deadline.resume()
                            nxt = next(pending)
            return False  # the stream ended early: the sequential count says where
        except DecodeTimeout:
            raise
        except (av.FFmpegError, OSError, ValueError, EOFError, IndexError, ZeroDivisionError, MemoryError):
            if self.deadline.expired():
                raise DecodeTimeout(f"decoding abandoned after the {self.deadline.seconds:g} s decode timeout")
            return False

    def _sequential(self, handed: set[int]):
        """Decode every frame up to the last wanted one, numbering them as they come out."""
        pending = iter(self.indices)
        nxt = next(pending)
        last = self.indices[-1]
        with self._open() as container:
            if not container.streams.video:
                self.error = "no video stream"
                return
            stream = self._video_stream(container)
            tb = stream.time_base
            for frame in container.decode(stream):
                i = self.decoded
                self.decoded += 1
                self.deadline.check()
                if i == nxt:
                    if i not in handed:
                        self.deadline.pause()  # the consumer's time is not decoding
                        yield self._hand_on(i, frame, tb)
                        self.deadline.resume()
                    if i >= last:
                        return
                    nxt = next(pending)
            self.ended = True
