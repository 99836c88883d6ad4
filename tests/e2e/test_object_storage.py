"""The whole job with the videos and the work dir on a real S3-compatible server (moto's server
mode, started by these tests on loopback) gives the same bytes as a local build, resumes, and
keeps one build per work dir."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from mesodata.pipeline import atomic, storage
from mesodata.pipeline.errors import UserError
from mesodata.pipeline.runner import Lock, Work

from tests.fixtures.s3server import moto_server, s3_environment

BUILD = ["--sources", "celebdf,dfdc,ff++", "--frames", "4", "--verify", "none", "--workers", "2"]
SPLIT = ["--seed", "0", "--shard-size", "1MB", "--workers", "2"]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback, the environment pointing every client (and worker) at it,
    and an s3fs filesystem on it with buckets `data` and `work`."""
    with moto_server() as env, s3_environment(env) as fs:
        fs.mkdir("data")
        fs.mkdir("work")
        yield fs


@pytest.fixture(scope="module")
def s3_sample(s3, sample_root) -> str:
    s3.put(str(sample_root), "data/sample", recursive=True)
    assert s3.find("data/sample")  # the sample is on the server
    return "s3://data/sample"


def mesodata(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The real CLI in a new process (the environment carries the server's address)."""
    proc = subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", *args], capture_output=True, text=True,
                          timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"mesodata {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def digests(files: dict[str, bytes]) -> dict[str, str]:
    """Content hash of every artifact (Parquet parts included), by path relative to the work dir.

    Internal records (.state/, .parts/, _fingerprint markers) are left out, and stage
    fingerprints quoted in JSON and READMEs are masked: they hash the manifest's parameters, which
    name the data root, so they differ between two places by design while no byte of data may."""
    fps = [json.loads(data)["fingerprint"] for rel, data in files.items() if rel.startswith(".state/")]
    out = {}
    for rel, data in sorted(files.items()):
        name = rel.rsplit("/", 1)[-1]
        if rel.startswith((".state/", ".parts/")) or name.startswith((".", "_fingerprint")):
            continue
        if not name.endswith(".parquet"):
            for fp in fps:
                data = data.replace(fp.encode(), b"FP").replace(fp[:16].encode(), b"FP")
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def local_digests(work: Path) -> dict[str, str]:
    return digests({p.relative_to(work).as_posix(): p.read_bytes() for p in work.rglob("*") if p.is_file()})


def s3_digests(fs, prefix: str) -> dict[str, str]:
    return digests({key[len(prefix) + 1:]: fs.cat_file(key) for key in fs.find(prefix)})


@pytest.fixture(scope="module")
def local_job(sample_root, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("local-job")
    mesodata("build", *BUILD, "--data-root", str(sample_root), "--work", str(work))
    mesodata("split", *SPLIT, "--work", str(work))
    return work


@pytest.fixture(scope="module")
def dask_cluster(s3):
    """An existing Dask cluster (started after the server's environment is set, so its workers
    inherit it), for `--scheduler ADDRESS`; yields a client on it."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def s3_job(s3, s3_sample, local_job, dask_cluster) -> str:
    """The same job with the videos and the work dir on the server, every unit on an existing Dask
    cluster whose workers read the videos from and write their parts to the server themselves."""
    work, address = "s3://work/job", dask_cluster.scheduler.address
    mesodata("build", *BUILD, "--backend", "dask", "--scheduler", address, "--data-root", s3_sample,
             "--work", work)
    mesodata("split", *SPLIT, "--backend", "dask", "--scheduler", address, "--work", work)
    return work


def test_units_ran_on_the_existing_cluster(s3_job, dask_cluster):
    executed = dask_cluster.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == 2 and all(n > 0 for n in executed.values())  # both workers took units
    assert sum(executed.values()) > 40  # manifest chunks, faces videos, dedupe chunks, shards


def test_store_build_gives_the_local_bytes(s3, s3_job, local_job):
    local, remote = local_digests(local_job), s3_digests(s3, "work/job")
    for artifact in ("manifest.parquet", "faces/_index.json", "dedupe.parquet", "split.parquet",
                     "shards/data/train/part-00000.parquet", "shards/dataset_info.json",
                     "reports/faces-ff++.png"):
        assert artifact in local
    assert sum(k.startswith("faces/") for k in local) > 30
    assert remote == local
    assert not [k for k in s3.find("work/job") if k.endswith(".tmp")]  # no half-written object left
    assert not s3.exists("work/job/.lock")  # released at the end


def test_store_build_resumes_only_what_is_missing(s3, s3_job, sample_root):
    before = s3_digests(s3, "work/job")
    faces = sorted(k for k in s3.find("work/job/faces") if k.endswith(".parquet"))
    s3.rm([faces[3], "work/job/shards/data/train/part-00001.parquet"])
    mesodata("build", *BUILD, "--data-root", "s3://data/sample", "--work", s3_job)
    assert _counts(s3, "faces")["computed"] == 1 and _counts(s3, "faces")["resumed"] == len(faces) - 1
    mesodata("split", *SPLIT, "--work", s3_job)
    assert _counts(s3, "shards")["computed"] == 1
    assert s3_digests(s3, "work/job") == before
    verify = mesodata("verify", "--work", s3_job)
    assert "bad" not in verify.stdout and "verified" in verify.stdout


def _counts(fs, stage: str) -> dict:
    return json.loads(fs.cat_file(f"work/job/.state/{stage}.json"))["counts"]


def test_status_and_verify_read_the_store(s3, s3_job):
    status = mesodata("status", "--work", s3_job)
    assert all(f"{stage}" in status.stdout for stage in ("manifest", "faces", "dedupe", "split", "shards"))
    assert "stale" not in status.stdout and "missing" not in status.stdout
    key = next(k for k in s3.find("work/job/faces") if k.endswith(".parquet"))
    good = s3.cat_file(key)
    s3.pipe_file(key, good[:-9] + bytes([good[-9] ^ 1]) + good[-8:])  # one flipped byte
    try:
        bad = mesodata("verify", "--work", s3_job, check=False)
        assert bad.returncode == 1 and key.rsplit("/", 1)[-1] in bad.stdout
    finally:
        s3.pipe_file(key, good)


def test_a_failed_write_leaves_no_object(s3):
    target = storage.location("s3://work/atomic/part.parquet")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed mid-write")
    assert not s3.exists("work/atomic/part.parquet")
    atomic.write_parquet(target, pa.table({"x": [1, 2, 3]}))
    assert storage.read_table(target).column("x").to_pylist() == [1, 2, 3]


def test_one_build_per_store_work_dir(s3):
    work = Work("s3://work/locked")
    with Lock(work):
        assert s3.exists("work/locked/.lock")
        with pytest.raises(UserError, match="in use"):  # a second build on this host
            Lock(work).__enter__()
    assert not s3.exists("work/locked/.lock")
    s3.pipe_file("work/locked/.lock", b'{"pid": 1, "host": "elsewhere"}')  # a build on another machine
    with pytest.raises(UserError, match="locked by a build on elsewhere"):
        Lock(work).__enter__()
    assert s3.cat_file("work/locked/.lock") == b'{"pid": 1, "host": "elsewhere"}'  # left alone
    s3.pipe_file("work/locked/.lock", f'{{"pid": 1, "host": "{socket.gethostname()}"}}'.encode())
    with Lock(work):  # a killed build of this host: taken over
        assert str(os.getpid()).encode() in s3.cat_file("work/locked/.lock")
    assert not s3.exists("work/locked/.lock")


def test_one_url_on_two_stores_is_two_work_dirs(s3):
    with Lock(Work("s3://work/shared-name")):
        with moto_server() as env, s3_environment(env) as other:  # a second store, same bucket name
            other.mkdir("work")
            with Lock(Work("s3://work/shared-name")):
                assert other.exists("work/shared-name/.lock")
        assert s3.exists("work/shared-name/.lock")
    assert not s3.exists("work/shared-name/.lock")


def test_locations():
    assert storage.location("file:///tmp/w") == Path("/tmp/w")
    assert storage.location("relative/dir") == Path("relative/dir")
    loc = storage.location("s3://bucket/prefix")
    assert storage.is_remote(loc) and loc.path == "bucket/prefix"
    assert storage.relative(loc / "faces" / "a.parquet", loc) == "faces/a.parquet"
    assert storage.join(loc / "FaceForensics++", "../DFDC/x.mp4").path == "bucket/prefix/DFDC/x.mp4"


@pytest.mark.parametrize("args, message", [
    (["train-detector", "--work", "s3://work/job"], "reads its shards from a local work dir"),
    (["build", "--fetch", "--data-root", "s3://data/x", "--work", "w"], "--fetch downloads to a local"),
])
def test_commands_that_need_local_folders_say_so(args, message):
    proc = mesodata(*args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and message in proc.stderr


def test_an_unusable_store_is_one_line(s3, sample_root, tmp_path):
    for args, message in (
        (["build", "--data-root", str(sample_root), "--work", "s3://no-such-bucket/w"],
         "work dir s3://no-such-bucket/w: the store has no bucket 'no-such-bucket'"),
        (["build", "--data-root", "s3://no-such-bucket/data", "--work", str(tmp_path / "w")],
         "data root s3://no-such-bucket/data: the store has no bucket 'no-such-bucket'"),
        (["split", "--work", "s3://work/never-built"], "does not exist: run `mesodata build"),
    ):
        proc = mesodata(*args, check=False)
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last and "Traceback" not in proc.stderr
