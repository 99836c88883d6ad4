"""Curating a work dir: `build` (manifest -> faces -> dedupe), `split` (split -> shards) and the
benchmark's export to another layout; each stage run by the runner under the work dir's lock."""

from __future__ import annotations

import logging
from pathlib import Path

from . import storage
from .errors import UserError
from .runner import Lock, Work, make_executor, run_stage
from .sources.names import check_held

log = logging.getLogger("mesodata")


def run_build(work: Work, data_root: Path, sources: list[str], *, overrides=None, compression="c23",
              ff_splits=None, faces_params: dict | None = None, dedupe_params: dict | None = None,
              workers: int = 1, executor=None) -> dict:
    """Run every build stage in order; each skips itself when its fingerprint is on disk."""
    from .stages import dedupe, faces, manifest

    manifest_params = {"data_root": data_root, "sources": sources, "overrides": overrides,
                       "compression": compression, "ff_splits": ff_splits}
    results = {"manifest": run_stage(work, manifest.STAGE, manifest_params, workers=workers, executor=executor)}
    results["faces"] = run_stage(work, faces.STAGE, faces_params, workers=workers, executor=executor)
    results["dedupe"] = run_stage(work, dedupe.STAGE, dedupe_params, workers=workers, executor=executor)
    return results


def fetch_first(data_root, work, *, ff_server=None, compression="c23", accept_terms=False, manifest=None):
    """`build --fetch`: download into a local data root before building; a failed file stops the build."""
    from .fetch import fetch

    if storage.is_remote(storage.location(data_root)) or storage.is_remote(storage.location(work)):
        raise UserError("--fetch downloads to a local --data-root and --work; upload to the store afterwards")
    report = fetch(Path(data_root), Path(work), ff_server=ff_server, compression=compression,
                   accept_terms=accept_terms, manifest=manifest)
    if report.failed:
        raise UserError(f"--fetch: {report.summary()}")


def build_work(work: str, data_root, sources: list[str], overrides: dict[str, str], *, workers: int,
               backend: str = "local", scheduler: str | None = None, **build_options) -> dict:
    """Check the data root holds the sources (before the work dir is made), then run the build
    stages under the work dir's lock on a `backend` executor."""
    check_held(data_root, sources, overrides)
    w = Work(work)
    with Lock(w):
        executor = make_executor(backend, workers, scheduler)
        try:
            return run_build(w, data_root, sources, overrides=overrides, workers=workers, executor=executor,
                             **build_options)
        finally:
            executor.close()


def split_work(work: str, split_params: dict, shards_params: dict, *, workers: int, backend: str = "local",
               scheduler: str | None = None) -> dict:
    """The split (one global step) then the shards (units on a `backend` executor), under the lock."""
    from .stages import shards as shards_stage
    from .stages import split as split_stage

    w = Work(work)
    if not w.root.is_dir():
        raise UserError(f"work dir {w.root} does not exist: run `mesodata build --work {w.root}` first")
    with Lock(w):
        results = {"split": run_stage(w, split_stage.STAGE, split_params)}
        executor = make_executor(backend, workers, scheduler)
        try:
            results["shards"] = run_stage(w, shards_stage.STAGE, shards_params, workers=workers, executor=executor)
        finally:
            executor.close()
    return results


def export_work(work: str, fmt: str, out: str, params: dict, *, workers: int) -> dict:
    """The benchmark in another tool's layout (stages/export.py's `fmt`) under the lock; the
    format's options are checked before the lock is taken."""
    from .stages import export

    w = Work(work)
    if not w.root.is_dir():
        raise UserError(f"work dir {w.root} does not exist: run `mesodata build` and `mesodata split` first")
    stage = export.STAGES[fmt]
    stage.check({"out": out, **params})
    with Lock(w):
        return run_stage(w, stage, {"out": out, **params}, workers=workers)
