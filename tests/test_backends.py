"""The same build on joblib processes and on a real Dask cluster gives the same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.build import run_build
from pipeline.runner import DaskExecutor, LocalExecutor, Work

FACES = {"frames": 4, "verify": "none"}


def digests(work: Path) -> dict[str, str]:
    """Content hash of every artifact (Parquet parts included), by path relative to the work dir."""
    out = {}
    for p in sorted(work.rglob("*")):
        rel = p.relative_to(work).as_posix()
        if p.is_file() and not rel.startswith(".state/") and not p.name.startswith(".") and p.suffix != ".png":
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def local_build(sample_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("local")
    run_build(Work(work), sample_root, ["celebdf", "dfdc", "ff++"], faces_params=FACES,
              workers=2, executor=LocalExecutor(2))
    return work


def test_dask_cluster_gives_identical_artifacts(sample_root, local_build, tmp_path):
    executor = DaskExecutor(workers=2)
    try:
        assert len(executor.client.scheduler_info()["workers"]) == 2
        run_build(Work(tmp_path), sample_root, ["celebdf", "dfdc", "ff++"], faces_params=FACES,
                  workers=2, executor=executor)
    finally:
        executor.close()
    local, dask = digests(local_build), digests(tmp_path)
    assert "manifest.parquet" in local and len(local) > 1
    assert dask == local


def test_one_worker_gives_identical_artifacts(sample_root, local_build, tmp_path):
    run_build(Work(tmp_path), sample_root, ["celebdf", "dfdc", "ff++"], faces_params=FACES,
              workers=1, executor=LocalExecutor(1))
    assert digests(tmp_path) == digests(local_build)
