"""The same build on joblib processes and on a real Dask cluster gives the same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mesodata.pipeline.build import run_build
from mesodata.pipeline.runner import DaskExecutor, LocalExecutor, Work

FACES = {"frames": 4, "verify": "none"}
SHARDS = {"shard_size": 1 << 20, "augment": "paper", "perturb_test": False, "seed": 0}


def build_and_split(data: Path, work: Path, executor) -> None:
    """The whole job: build, split and shards, every unit on `executor`."""
    from mesodata.pipeline.stages import shards, split

    w = Work(work)
    run_build(w, data, ["celebdf", "dfdc", "ff++"], faces_params=FACES, workers=2, executor=executor)
    split.run(w, {"seed": 0})
    shards.run(w, SHARDS, workers=2, executor=executor)


def digests(work: Path) -> dict[str, str]:
    """Content hash of every artifact (Parquet parts included), by path relative to the work dir."""
    out = {}
    for p in sorted(work.rglob("*")):
        rel = p.relative_to(work).as_posix()
        if p.is_file() and not rel.startswith(".state/") and not p.name.startswith("."):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def local_build(sample_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("local")
    build_and_split(sample_root, work, LocalExecutor(2))
    return work


def test_dask_cluster_gives_identical_artifacts(sample_root, local_build, tmp_path):
    executor = DaskExecutor(workers=2)
    try:
        assert len(executor.client.scheduler_info()["workers"]) == 2
        build_and_split(sample_root, tmp_path, executor)
    finally:
        executor.close()
    local, dask = digests(local_build), digests(tmp_path)
    for artifact in ("manifest.parquet", "dedupe.parquet", "split.parquet", "shards/data/train/part-00000.parquet"):
        assert artifact in local
    assert sum(k.startswith("faces/") for k in local) > 30
    assert dask == local


def test_one_worker_gives_identical_artifacts(sample_root, local_build, tmp_path):
    build_and_split(sample_root, tmp_path, LocalExecutor(1))
    assert digests(tmp_path) == digests(local_build)
