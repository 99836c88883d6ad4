"""The one progress helper (pipeline/progress.py), where a person waits (#17 item 11): a bar with an
ETA when asked for (on a terminal), nothing at all when stderr is not a terminal, and the plain log
lines the runner keeps for logs."""

from __future__ import annotations

import logging
import sys

import pytest

from mesodata.pipeline.progress import Progress, track


def test_nothing_is_written_when_stderr_is_not_a_terminal(capfd, caplog):
    assert not sys.stderr.isatty()  # pytest captures stderr: not a terminal
    with caplog.at_level(logging.DEBUG):
        assert list(track(range(50), 50, "scoring test", "img")) == list(range(50))
        with Progress(10, "SVM head", "fit") as bar:
            for _ in range(10):
                bar.update()
    out, err = capfd.readouterr()
    assert out == "" and err == "" and caplog.records == []
    assert bar.n == 10 and not bar.active


def test_a_bar_with_the_count_rate_and_eta_when_drawn(capfd):
    with Progress(8, "writing the sample", "video", enabled=True) as bar:
        for _ in range(3):
            bar.update()
    err = capfd.readouterr().err
    assert bar.active
    last = err.split("\r")[-1]
    assert "writing the sample" in last and "3/8" in last and "video/s" in last
    assert "<" in last  # tqdm's elapsed<remaining: the ETA


def test_weights_count_rows_of_batches_and_eta_follows():
    batches = [[0] * 64, [0] * 64, [0] * 10]
    bar = Progress(138, "scoring", "img")
    for b in batches[:2]:
        bar.update(len(b))
    assert bar.n == 128 and bar.eta is not None and bar.eta >= 0
    seen = list(track(batches, 138, "scoring", "img", weight=len))
    assert seen == batches


def test_plain_log_lines_each_tenth_for_the_runner(caplog):
    with caplog.at_level(logging.INFO, logger="mesodata"):
        list(track(range(23), 23, "faces", "units", log_steps=10))
    lines = [r.getMessage() for r in caplog.records]
    assert [ln.split(" units")[0] for ln in lines] == [f"faces: {i}/23" for i in (*range(2, 23, 2), 23)]
    assert "ETA" in lines[0] and "ETA" not in lines[-1]


def test_bytes_read_as_bytes(caplog):
    with caplog.at_level(logging.INFO, logger="mesodata"):
        bar = Progress(4 * 1024 ** 2, "fetch", "B", binary=True, log_every=0)
        bar.update(1024 ** 2, postfix="files 0/2")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("fetch: 1.0 MiB/4.0 MiB (") and line.endswith("files 0/2") and "iB/s" in line


def test_the_sample_counts_every_video_it_writes(sample_root):
    """The sample's bar ends at its total: every video it encodes is one step (the copied and the
    text 'videos' are written otherwise; the empty one is encoded, then emptied)."""
    from mesodata.pipeline.sample import SAMPLE_VIDEOS

    mp4 = list(sample_root.rglob("*.mp4"))
    not_encoded = {"ecopiedxxx.mp4", "fnotavideo.mp4"}
    assert not_encoded <= {p.name for p in mp4}
    assert len(mp4) - len(not_encoded) == SAMPLE_VIDEOS


@pytest.mark.parametrize("total", [None, 0])
def test_unknown_or_empty_totals(total):
    bar = Progress(total, "x")
    bar.update(3)
    assert bar.eta is None or bar.eta == 0
    assert bar.line().startswith("x: 3")
