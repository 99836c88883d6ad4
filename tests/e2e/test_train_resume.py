"""A training killed mid-epoch (SIGKILL of a real `mesodata train-detector`) resumes from its last
checkpoint when re-run with the same request, and ends with the weights of a run never
interrupted; a re-run with other options trains from the start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.fixtures.samples import write_sample_shards

# One process on the CPU, 12 iterations per epoch, a checkpoint after every one: the kill lands
# mid-epoch, and the run is deterministic from its seed.
OPTIONS = ["--models", "meso4", "--epochs", "2", "--batch-size", "8", "--seed", "0", "--processes", "1",
           "--loader-workers", "2", "--checkpoint-every", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_sample_shards(root, videos={"train": 8, "val": 3, "test": 3}, frames=6, perturbed=())
    return root


def _command(work: Path, run: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mesodata.pipeline.cli", "train-detector", "--work", str(work), "--run", run,
            *OPTIONS, *extra]


def _train(work: Path, run: str, *extra: str) -> str:
    """Run train-detector to completion; its log (stderr)."""
    proc = subprocess.run(_command(work, run, *extra), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stderr


def _checkpoint(work: Path, run: str) -> Path | None:
    found = list((work / "detector").glob(f".{run}.tmp-*/.resume/seed-0/meso4.pt"))
    return found[0] if found else None


def _position(path: Path) -> tuple[int, int]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return int(ckpt["epoch"]), int(ckpt["iteration"])


def _kill_mid_epoch(work: Path, run: str, epoch: int, *extra: str) -> tuple[int, int]:
    """Start a training, SIGKILL it once a checkpoint a few iterations into `epoch` (0-based) is
    written; return the last checkpoint's (epoch, iteration)."""
    log = open(work / f"{run}-killed.log", "w")
    proc = subprocess.Popen(_command(work, run, *extra), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            path = _checkpoint(work, run)
            if path is not None:
                try:
                    e, i = _position(path)
                except (OSError, RuntimeError, EOFError):  # replaced while being read
                    e, i = -1, 0
                if e == epoch and i >= 3:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            time.sleep(0.01)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (work / f"{run}-killed.log").read_text()
    assert not (work / "detector" / run).exists(), "a killed run must not appear"
    return _position(_checkpoint(work, run))


def _weights(folder: Path) -> dict:
    return torch.load(folder / "meso4.pt", map_location="cpu", weights_only=True)["state_dict"]


def _history(folder: Path) -> list[dict]:
    rows = json.loads((folder / "metrics.json").read_text())["models"]["meso4"]["history"]
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]


def test_a_killed_training_resumes_mid_epoch_and_ends_as_if_never_interrupted(work):
    reference = work / "detector" / "whole"
    log = _train(work, "whole")
    assert "resuming" not in log

    epoch, iteration = _kill_mid_epoch(work, "cut", epoch=1)
    assert epoch == 1 and 0 < iteration < 12, (epoch, iteration)  # mid-way through the second epoch

    log = _train(work, "cut")
    assert "resuming from checkpoint" in log and f"at epoch 2/2, iteration {iteration} of 12" in log, log
    run = work / "detector" / "cut"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["models"]["meso4"]["config"]["resumed_from"] == {"epoch": 1, "iteration": iteration}
    assert metrics["config"]["processes"] == 1
    assert "resumed after an interruption" in (run / "report.md").read_text()

    # the same weights, bit for bit, and the same learning curve as the run never interrupted
    ours, theirs = _weights(run), _weights(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert _history(run) == _history(reference)
    assert metrics["models"]["meso4"]["best_epoch"] == json.loads(
        (reference / "metrics.json").read_text())["models"]["meso4"]["best_epoch"]

    # the checkpoints went with the unfinished run
    assert not (run / ".resume").exists()
    assert not list((work / "detector").glob(".cut.tmp-*"))


def test_a_rerun_with_other_options_trains_from_the_start(work):
    epoch, iteration = _kill_mid_epoch(work, "other", epoch=0)
    assert epoch == 0 and iteration > 0
    log = _train(work, "other", "--lr-schedule", "paper")
    assert "resuming" not in log
    metrics = json.loads((work / "detector" / "other" / "metrics.json").read_text())
    assert metrics["models"]["meso4"]["config"]["resumed_from"] is None
    assert metrics["config"]["lr_schedule"] == "paper"
    assert not list((work / "detector").glob(".other.tmp-*"))


def test_a_killed_data_parallel_training_resumes_and_ends_as_if_never_interrupted(work):
    """Full-size training runs data-parallel by default (`--processes auto`): a SIGKILL of the
    command takes its rank processes down with it, and the re-run resumes every rank mid-epoch to
    the weights of a two-process run never interrupted."""
    two = ("--processes", "2", "--loader-workers", "0")
    reference = work / "detector" / "whole-2"
    assert "resuming" not in _train(work, "whole-2", *two)

    epoch, iteration = _kill_mid_epoch(work, "cut-2", 1, *two)
    assert epoch == 1 and 0 < iteration < 12, (epoch, iteration)
    time.sleep(1.0)
    orphans = subprocess.run(["pgrep", "-f", "--", "--run cut-2"], capture_output=True, text=True).stdout.split()
    assert orphans == [], f"rank processes outlived the killed command: {orphans}"

    log = _train(work, "cut-2", *two)
    assert "resuming from checkpoint" in log and f"at epoch 2/2, iteration {iteration} of 12" in log, log
    run = work / "detector" / "cut-2"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["processes"] == 2
    assert metrics["models"]["meso4"]["config"]["resumed_from"] == {"epoch": 1, "iteration": iteration}
    ours, theirs = _weights(run), _weights(reference)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name
    assert _history(run) == _history(reference)
    assert not list((work / "detector").glob(".cut-2.tmp-*"))
