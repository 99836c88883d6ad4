"""Frame sampling: index plans, frame-exact decoding of H.264 with B-frames, truncation, deadlines."""

from __future__ import annotations

import os
import threading
import time

import av
import numpy as np
import pytest

from mesodata.pipeline import footage
from mesodata.pipeline.frames import Deadline, FrameSampler, count_frames, plan_indices

BITS = 7
W, H = 16 * BITS, 64


def _coded_frame(i: int) -> np.ndarray:
    """A frame that shows its own index: 7 black/white bars, most significant bit first."""
    bits = [(i >> (BITS - 1 - b)) & 1 for b in range(BITS)]
    row = np.repeat(np.array(bits, np.uint8) * 255, W // BITS)
    return np.repeat(np.repeat(row[None, :, None], H, 0), 3, 2)


def _read_code(rgb: np.ndarray) -> int:
    means = rgb.reshape(rgb.shape[0], BITS, -1, 3)[:, :, 2:-2].mean(axis=(0, 2, 3))
    return int("".join("1" if m > 127 else "0" for m in means), 2)


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """120 frames at 25 fps, H.264 with 3 B-frames, each frame carrying its index."""
    path = tmp_path_factory.mktemp("frames") / "coded.mp4"
    footage.write_video(path, (_coded_frame(i) for i in range(120)), fps=25, bframes=3)
    return str(path)


def test_plan_evenly_spaced_whole_video():
    idx = plan_indices(250, 25.0, frames=32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 249
    gaps = np.diff(idx)
    assert gaps.min() >= 7 and gaps.max() <= 9
    assert plan_indices(20, 25.0, frames=32) == list(range(20))  # fewer frames than asked: all
    assert plan_indices(100, 25.0, frames=1) == [0]
    assert plan_indices(0, 25.0) == []


def test_plan_stride_and_every_seconds():
    assert plan_indices(10, 25.0, stride=4) == [0, 4, 8]
    assert plan_indices(100, 25.0, every_seconds=1.0) == [0, 25, 50, 75]
    assert plan_indices(101, 30.0, every_seconds=0.5) == [0, 15, 30, 45, 60, 75, 90]
    with pytest.raises(ValueError, match="frame rate"):
        plan_indices(100, None, every_seconds=1.0)
    with pytest.raises(ValueError, match="at most one"):
        plan_indices(100, 25.0, stride=2, every_seconds=1.0)


def test_coded_video_has_b_frames(coded):
    """The fixture must really reorder frames, or the exactness test below proves nothing."""
    with av.open(coded) as c:
        pts = [p.pts for p in c.demux(c.streams.video[0]) if p.pts is not None]
    assert pts != sorted(pts)


def test_sampled_frames_are_exactly_the_planned_ones(coded):
    indices = plan_indices(120, 25.0, frames=32)
    got = []
    sampler = FrameSampler(coded, indices)
    for sf in sampler:
        rgb = sf.frame.to_ndarray(format="rgb24")
        got.append((sf.index, _read_code(rgb), sf.timestamp))
    assert [g[0] for g in got] == indices
    assert [g[1] for g in got] == indices  # the pixels say which frame it is
    assert [g[2] for g in got] == pytest.approx([i / 25 for i in indices])
    assert sampler.error is None and not sampler.ended
    assert sampler.skipped > 0  # the frames came by the skipping pass, not its sequential fallback


def _sampled(path, indices, **kw) -> tuple[FrameSampler, list[tuple[int, float, np.ndarray]]]:
    sampler = FrameSampler(path, indices, **kw)
    return sampler, [(sf.index, sf.timestamp, sf.frame.to_ndarray(format="rgb24")) for sf in sampler]


@pytest.mark.parametrize("indices", [[0, 1, 2, 119], list(range(0, 120, 7)), [40, 41, 42, 43, 90]],
                         ids=["ends", "stride-7", "runs"])
def test_skipping_unwanted_frames_gives_the_sequential_frames_pixel_for_pixel(coded, indices):
    fast, got = _sampled(coded, indices)
    slow, want = _sampled(coded, indices, skip_unwanted=False)
    assert [g[0] for g in got] == [w[0] for w in want] == indices
    assert [g[1] for g in got] == [w[1] for w in want]
    assert all(np.array_equal(g[2], w[2]) for g, w in zip(got, want))
    assert fast.decoded == slow.decoded == indices[-1] + 1
    # 3 B-frames between references: most unwanted frames are B-frames nothing refers to
    assert slow.skipped == 0 and fast.skipped > (indices[-1] + 1 - len(indices)) // 3


def test_a_video_that_ends_early_falls_back_to_sequential_without_repeating_a_frame(coded, tmp_path):
    """The skipping pass hands on what it reached, meets the early end, and the sequential pass
    takes over from the start: it has the last word on `decoded` and `ended`, and hands on nothing twice."""
    cut = tmp_path / "cut.mp4"
    data = open(coded, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    indices = plan_indices(120, 25.0, frames=32)
    fast, got = _sampled(str(cut), indices)
    slow, want = _sampled(str(cut), indices, skip_unwanted=False)
    assert [g[0] for g in got] == [w[0] for w in want] and len(got) == len({g[0] for g in got}) > 0
    assert all(np.array_equal(g[2], w[2]) for g, w in zip(got, want))
    assert (fast.decoded, fast.ended, fast.error) == (slow.decoded, slow.ended, slow.error) == (slow.decoded, True, None)


def test_decoding_stops_at_the_last_wanted_frame(coded):
    sampler = FrameSampler(coded, [3, 17])
    assert [_read_code(sf.frame.to_ndarray(format="rgb24")) for sf in sampler] == [3, 17]
    assert sampler.decoded == 18


def test_count_frames_by_demuxing(coded):
    assert count_frames(coded) == 120


def test_truncated_file_yields_what_it_has(coded, tmp_path):
    cut = tmp_path / "cut.mp4"
    data = open(coded, "rb").read()
    cut.write_bytes(data[: len(data) // 2])
    sampler = FrameSampler(str(cut), plan_indices(120, 25.0, frames=32))
    got = [(sf.index, _read_code(sf.frame.to_ndarray(format="rgb24"))) for sf in sampler]
    assert 0 < len(got) < 32
    assert all(i == code for i, code in got)
    assert sampler.ended and sampler.error is None
    assert 0 < sampler.decoded < 120


def test_slow_decode_is_abandoned_at_the_deadline(coded):
    """Checked between frames (here without the alarm, as off the main thread)."""
    d = Deadline(0.001)
    sampler = FrameSampler(coded, list(range(120)), deadline=d)
    got = list(sampler)
    assert len(got) < 120 and sampler.decoded < 120
    assert "decode timeout" in sampler.error and d.elapsed() >= 0.001


def test_the_decode_timeout_counts_decoding_only(coded):
    """Time spent before decoding (a cold worker, loading models) and on the frames handed on (face
    work, waiting for the face thread) is not decoding: a slow machine must not time out a healthy
    video. Here 1.2 s of consumer time against a 0.5 s budget, with the alarm armed."""
    with Deadline(0.5) as d:
        time.sleep(0.3)
        sampler = FrameSampler(coded, [0, 1, 2, 3], deadline=d)
        got = []
        for sf in sampler:
            got.append(sf.index)
            time.sleep(0.3)
    assert got == [0, 1, 2, 3] and sampler.error is None
    assert 0 < d.elapsed() < 0.5


def test_a_stalled_read_is_abandoned(coded, tmp_path):
    """A file that stops delivering bytes (a hung network mount, a FIFO): the read blocks in the
    kernel; SIGALRM and PyAV's interrupt callback break it at the deadline."""
    fifo = tmp_path / "stall.fifo"
    os.mkfifo(fifo)
    data = open(coded, "rb").read()
    stop = threading.Event()

    def feed():
        try:
            with open(fifo, "wb") as f:
                f.write(data[: len(data) // 3])
                f.flush()
                stop.wait(30)
        except OSError:
            pass

    threading.Thread(target=feed, daemon=True).start()
    try:
        with Deadline(1.0) as d:
            sampler = FrameSampler(str(fifo), list(range(120)), deadline=d)
            n = sum(1 for _ in sampler)
    finally:
        stop.set()
    # Without the deadline the read would wait for the writer (30 s) and end at EOF with no error.
    assert n < 120
    assert "decode timeout" in sampler.error


def test_not_a_video(tmp_path):
    p = tmp_path / "x.mp4"
    p.write_text("not a video\n")
    sampler = FrameSampler(str(p), [0, 1])
    assert list(sampler) == []
    assert sampler.error and "InvalidDataError" in sampler.error
