"""Where a detector run lives: WORK/detector/<run>/ by name, or a run folder given by its path.

Kept free of torch so the commands can resolve and check folders before the detector loads.
"""

from __future__ import annotations

from pathlib import Path

from mesodata.pipeline import storage
from mesodata.pipeline.errors import UserError

__all__ = ["run_folder", "find_run_folder", "training_work"]


def run_folder(work: str | Path, run: str) -> Path:
    """The folder of run `run` trained in `work`."""
    return Path(work) / "detector" / run


def find_run_folder(work: str | None, run: str, run_dir: str | Path | None) -> Path:
    """The run a command reads: `run_dir` when given, else WORK/detector/<run>/ (one of the two)."""
    if run_dir is not None:
        if work is not None:
            raise UserError("pass either --run-dir PATH or --work WORK [--run NAME], not both")
        return Path(run_dir)
    if work is None:
        raise UserError("which run? pass --work WORK (and --run NAME, default 'default') or --run-dir PATH")
    return run_folder(work, run)


def training_work(work: str, run: str) -> Path:
    """The local work dir `train-detector` reads shards from, checked before any training starts:
    it must be local, exist, and let the run folder be written (now, not after the first epoch)."""
    if "://" in work and not work.startswith("file://"):
        raise UserError(f"train-detector reads its shards from a local work dir, not {work}: copy "
                        "WORK/shards/ to a local folder first (e.g. `aws s3 sync URL/shards DIR/shards`)")
    path = Path(work.removeprefix("file://"))
    if not path.is_dir():
        raise UserError(f"no work dir at {path}")
    storage.check_writable(run_folder(path, run), "run dir")
    return path
