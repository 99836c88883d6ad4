"""Reliability: faults, bad input and interruptions never lose or corrupt data.

Everything here runs the real thing: `mesodata build` / `split` / `verify` as processes, killed
with real SIGKILLs at real points (found by polling the work dir, no hooks in the product), real
decoders on real odd files, a real full file system (a 2 MB tmpfs; root only) and real locks.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mesodata.pipeline.runner import Work
from tests.fixtures import reliability_media as media

REPO = Path(__file__).resolve().parents[2]
FAST = ["--frames", "4", "--verify", "none"]  # detection quality does not matter here
BIG_COPIES = 48  # hard links of one 1080p clip: enough manifest chunks and faces units to kill in


# --- helpers ---------------------------------------------------------------------------------------
def mesodata(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **kw)


def _default_sigint() -> None:
    # A command typed at a terminal gets Ctrl-C with the default disposition; a test run started in
    # the background (`nohup`, `&`, some CI runners) would pass its ignored SIGINT on to the build.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str, stderr=None) -> subprocess.Popen:
    """A mesodata process in its own session, so its workers die with it (os.killpg)."""
    return subprocess.Popen([sys.executable, "-m", "mesodata.pipeline.cli", *map(str, args)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_default_sigint)


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 120) -> None:
    """SIGKILL the whole process group of `proc` as soon as `ready()` holds."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)  # let the killed workers go


def parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet")) if folder.is_dir() else []


def build_and_split(data: Path, work: Path) -> None:
    """`mesodata build` then `mesodata split`, both expected to succeed."""
    proc = mesodata(*build_args(data, work, "--workers", "2"))
    assert proc.returncode == 0, proc.stderr
    proc = mesodata("split", "--work", work, *SPLIT)
    assert proc.returncode == 0, proc.stderr


SPLIT = ["--seed", "0", "--augment", "none", "--shard-size", "200KB", "--workers", "1"]


def build_args(data: Path, work: Path, *extra: str) -> list[str]:
    return ["build", "--data-root", data, "--work", work, *FAST, *extra]


def digests(work: Path) -> dict:
    """What must not depend on interruptions: every table and every shard file, by content."""
    w = Work(work)
    out = {"manifest": pq.read_table(w.path("manifest.parquet")).to_pylist()}
    index = json.loads(w.path("faces/_index.json").read_text())["parts"]
    out["faces"] = {e["video_id"]: pq.read_table(w.path("faces", e["part"])).to_pylist() for e in index}
    for name in ("dedupe.parquet", "split.parquet"):
        if w.path(name).exists():
            out[name] = pq.read_table(w.path(name)).to_pylist()
    out["shards"] = {p.relative_to(work).as_posix(): p.read_bytes() for p in sorted(w.path("shards").rglob("*.parquet"))}
    return out


def counts(work: Path, stage: str) -> dict:
    return Work(work).state(stage)["counts"]


# --- data ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(sample_root, tmp_path_factory) -> Path:
    """The sample (three layouts, real faces, the usual faults) plus a DFDC part of BIG_COPIES
    hard links of one 1080p clip: probing and cropping them takes long enough to kill in."""
    root = tmp_path_factory.mktemp("reliability-data")
    shutil.copytree(sample_root, root, dirs_exist_ok=True, copy_function=os.link)
    part = root / "DFDC/dfdc_train_part_1"
    clip = media.encode(part / "h000.mp4", media.no_face_frames(2, (1920, 1080)))
    meta = {"h000.mp4": {"label": "REAL", "split": "train"}}
    for i in range(1, BIG_COPIES):
        os.link(clip, part / f"h{i:03d}.mp4")
        meta[f"h{i:03d}.mp4"] = {"label": "REAL", "split": "train"}
    (part / "metadata.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict:
    """An uninterrupted build (+ split), and how long it took."""
    work = tmp_path_factory.mktemp("reference") / "w"
    t0 = time.monotonic()
    build_and_split(data, work)
    return {"work": work, "seconds": time.monotonic() - t0}


# --- 1. interruption + 3. concurrency ----------------------------------------------------------------
def test_killed_at_every_stage_resumes_to_the_same_result(data, reference, tmp_path):
    """SIGKILL mid-manifest, mid-faces, mid-dedupe and mid-shards; each resume redoes only the
    unfinished units (counted), takes over the dead process's lock, and the end result is the
    uninterrupted build's, table for table and shard byte for shard byte."""
    work = tmp_path / "w"
    w = Work(work)

    # manifest: one process, so chunks finish one at a time
    proc = start(*build_args(data, work, "--workers", "1"))
    kill_when(proc, lambda: parquet_files(work / ".parts/manifest"), "a manifest part")
    done = len(parquet_files(work / ".parts/manifest"))
    assert w.state("manifest") is None and not (work / "manifest.parquet").exists()
    assert (work / ".lock").exists()  # left by the dead process: stale
    n_chunks = -(-(48 + BIG_COPIES) // 32)  # the sample has 48 manifest rows
    assert 1 <= done < n_chunks

    # faces; and meanwhile a second build on the same work dir is refused at once
    err = tmp_path / "b.err"
    with open(err, "w") as f:
        proc = start(*build_args(data, work, "--workers", "2"), stderr=f)
    deadline = time.monotonic() + 60
    while not ((work / ".lock").exists() and f'"pid": {proc.pid}' in (work / ".lock").read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.01)
    t0 = time.monotonic()
    second = mesodata(*build_args(data, work, "--workers", "1"))
    refused_in = time.monotonic() - t0
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip() == (f"error: work dir {work} is in use by process {proc.pid} on "
                                     f"{socket.gethostname()}; wait for it to finish (one build per work dir)")
    print(f"\nsecond build refused in {refused_in:.2f} s (process start included)")
    kill_when(proc, lambda: parquet_files(work / "faces"), "a faces part")
    assert "taking over stale lock" in err.read_text()
    st = counts(work, "manifest")
    assert (st["resumed"], st["computed"]) == (done, n_chunks - done), st
    faces_done = len(parquet_files(work / "faces"))
    videos = st["videos"]
    assert w.state("faces") is None and 1 <= faces_done < videos

    # dedupe: killed as soon as its parts folder is made
    proc = start(*build_args(data, work, "--workers", "2"))
    kill_when(proc, lambda: (work / ".parts/dedupe/_fingerprint").exists(), "the dedupe stage")
    st = counts(work, "faces")
    assert (st["resumed"], st["computed"]) == (faces_done, videos - faces_done), st
    assert w.state("dedupe") is None
    dedupe_done = len(parquet_files(work / ".parts/dedupe"))
    proc = mesodata(*build_args(data, work, "--workers", "2"))
    assert proc.returncode == 0, proc.stderr
    st = counts(work, "dedupe")
    assert st["resumed"] == dedupe_done and st["computed"] == st["units"] - dedupe_done, st

    # shards, through `mesodata split`
    proc = start("split", "--work", work, *SPLIT)
    kill_when(proc, lambda: list((work / "shards").rglob("part-*.parquet")), "a shard")
    assert w.state("shards") is None
    made = len(parquet_files(work / ".parts/shards"))  # shards whose unit finished
    proc = mesodata("split", "--work", work, *SPLIT)
    assert proc.returncode == 0, proc.stderr
    st = counts(work, "shards")
    assert st["resumed"] == made and st["computed"] == st["shards"] - made >= 1, st
    assert not list((work / "shards").rglob(".*.tmp"))
    print(f"resume counts: manifest {done}/{n_chunks} chunks kept, faces {faces_done}/{videos} videos, "
          f"shards {made}/{st['shards']}")
    assert digests(work) == digests(reference["work"])


def test_stale_lock_two_takers_only_one_runs(data, tmp_path):
    """A lock file left by a dead process, and two builds starting at once: one takes it over and
    runs, the other is refused (a check-the-pid-then-unlink lock would let both run)."""
    work = tmp_path / "w"
    work.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (work / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    args = build_args(data, work, "--sources", "dfdc", "--workers", "1")
    procs = [subprocess.Popen([sys.executable, "-m", "mesodata.pipeline.cli", *map(str, args)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    (ok, ok_err), (refused, refused_err) = results
    assert (ok, refused) == (0, 2), results
    assert "taking over stale lock" in ok_err and "is in use by process" in refused_err
    assert "Traceback" not in ok_err + refused_err
    assert not (work / ".lock").exists()


# --- 2. no-op rerun, and a changed parameter ------------------------------------------------------
def test_finished_build_rerun_is_a_noop(data, reference):
    work = reference["work"]
    before = {s: Work(work).state(s) for s in ("manifest", "faces", "dedupe", "split", "shards")}
    t0 = time.monotonic()
    build_and_split(data, work)
    took = time.monotonic() - t0
    after = {s: Work(work).state(s) for s in before}
    assert after == before  # same fingerprints, same `finished` time, same counts: nothing redone
    # (how fast a no-op rerun is, is a benchmark's figure, not an assertion: shared machines flake)
    print(f"\nno-op rerun {took:.1f} s vs first run {reference['seconds']:.1f} s: "
          f"ratio {took / reference['seconds']:.2f}")


# --- 6. integrity --------------------------------------------------------------------------------
def test_changing_frames_redoes_faces_and_what_follows_not_the_manifest(data, reference, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(reference["work"], work, symlinks=True)
    before = {s: Work(work).state(s) for s in ("manifest", "faces", "dedupe")}
    proc = mesodata(*build_args(data, work, "--workers", "2", "--frames", "3"))
    assert proc.returncode == 0, proc.stderr
    after = {s: Work(work).state(s) for s in before}
    assert after["manifest"] == before["manifest"]
    assert after["faces"]["fingerprint"] != before["faces"]["fingerprint"]
    assert after["faces"]["counts"]["computed"] == after["faces"]["counts"]["videos"]  # every video redone
    assert after["faces"]["counts"]["resumed"] == 0
    assert after["dedupe"]["fingerprint"] != before["dedupe"]["fingerprint"]
    assert Work(work).status(["shards"])[0]["status"] == "stale"


def test_verify_catches_a_flipped_byte_in_a_faces_part_and_a_shard(reference, data, tmp_path):
    work = tmp_path / "w"
    shutil.copytree(reference["work"], work, symlinks=True)
    proc = mesodata("verify", "--work", work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded = {o for s in ("faces", "shards") if Work(work).state(s) for o in Work(work).state(s)["outputs"]}
    face_parts = [p for p in parquet_files(work / "faces")]
    assert face_parts and {f"faces/{p.name}" for p in face_parts} <= recorded  # every part is checked
    victims = [face_parts[len(face_parts) // 2]]
    shard_files = sorted((work / "shards").rglob("part-*.parquet"))
    assert shard_files and {p.relative_to(work).as_posix() for p in shard_files} <= recorded
    victims.append(shard_files[0])
    for v in victims:
        data_ = bytearray(v.read_bytes())
        data_[len(data_) // 2] ^= 0x01
        v.write_bytes(bytes(data_))
    proc = mesodata("verify", "--work", work)
    assert proc.returncode == 1 and f"{len(victims)} bad" in proc.stdout, proc.stdout
    for v in victims:
        assert v.relative_to(work).as_posix() in proc.stdout
    # the way back: drop the bad part, rebuild; only that video is redone
    victims[0].unlink()
    proc = mesodata(*build_args(data, work, "--workers", "1"))
    assert proc.returncode == 0, proc.stderr
    st = counts(work, "faces")
    assert st["computed"] == 1 and st["resumed"] == st["videos"] - 1, st


def test_verify_then_split_redoes_exactly_the_corrupt_shard_and_repair_a_faces_part(reference, data, tmp_path):
    """verify -> the next split/build redoes exactly the units found corrupt (issue 17, 8): plain
    `verify` remembers them, `verify --repair` removes them at once; the end result is the
    uninterrupted build's."""
    work = tmp_path / "w"
    shutil.copytree(reference["work"], work, symlinks=True)
    shard = sorted((work / "shards").rglob("part-*.parquet"))[0]
    flip_a_byte(shard)
    proc = mesodata("verify", "--work", work)
    rel = shard.relative_to(work).as_posix()
    assert proc.returncode == 1 and rel in proc.stdout and "the next `mesodata split` redoes" in proc.stdout, proc.stdout
    assert Work(work).status(["shards"])[0]["status"] == "stale"
    proc = mesodata("split", "--work", work, *SPLIT)
    assert proc.returncode == 0, proc.stderr
    st = counts(work, "shards")
    assert (st["computed"], st["resumed"]) == (1, st["shards"] - 1), st

    part = parquet_files(work / "faces")[3]
    flip_a_byte(part)
    dedupe_before = Work(work).state("dedupe")
    proc = mesodata("verify", "--repair", "--work", work)
    assert proc.returncode == 0 and "removed 1 corrupt file" in proc.stdout, proc.stdout + proc.stderr
    assert not part.exists() and Work(work).status(["faces"])[0]["status"] == "stale"
    proc = mesodata(*build_args(data, work, "--workers", "1"))
    assert proc.returncode == 0, proc.stderr
    st = counts(work, "faces")
    assert (st["computed"], st["resumed"]) == (1, st["videos"] - 1), st
    assert Work(work).state("dedupe") == dedupe_before  # same crops: nothing downstream redone
    proc = mesodata("verify", "--work", work)
    assert proc.returncode == 0 and not (work / ".damaged.json").exists(), proc.stdout
    assert digests(work) == digests(reference["work"])


def flip_a_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def test_train_detector_refuses_an_unwritable_run_dir_before_training(reference, tmp_path):
    """WORK/detector is a regular file, so no run dir can be made there: train-detector says so in
    one line at once, before reading the shards or training an epoch (issue 17, 1)."""
    pytest.importorskip("torch")
    work = tmp_path / "w"
    shutil.copytree(reference["work"] / "shards", work / "shards")
    (work / "detector").write_text("a file where the runs go\n")
    proc = mesodata("train-detector", "--work", work, "--epochs", "1", "--loader-workers", "0", timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip() == (f"error: run dir {work / 'detector' / 'default'} cannot be written: "
                                   f"{work / 'detector'} is not a folder"), proc.stderr
    assert proc.stdout == ""  # nothing trained, nothing reported


# --- 9. Ctrl-C and SIGKILL: no worker outlives the command ------------------------------------------
def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited child waiting to be reaped uses nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def busy_build(data: Path, work: Path, err: Path, *extra: str) -> tuple[subprocess.Popen, list[int]]:
    """A real `mesodata build` with two workers, caught while its workers crop faces."""
    with open(err, "w") as f:
        proc = start(*build_args(data, work, "--workers", "2", *extra), stderr=f)
    deadline = time.monotonic() + 120
    while not parquet_files(work / "faces"):
        assert proc.poll() is None, f"the build ended (rc {proc.returncode}) early: {err.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for a faces part"
        time.sleep(0.01)
    workers = [c for c in children(proc.pid) if running(c)]
    assert len(workers) >= 2, workers  # the two workers (and helpers such as a resource tracker)
    return proc, workers


def wait_gone(pids: list[int], timeout: float) -> float:
    t0 = time.monotonic()
    while any(running(p) for p in pids):
        assert time.monotonic() - t0 < timeout, [p for p in pids if running(p)]
        time.sleep(0.05)
    return time.monotonic() - t0


@pytest.mark.parametrize("backend", ["local", "dask"])
def test_ctrl_c_stops_every_worker_exits_130_and_leaves_nothing_half_written(data, tmp_path, backend):
    if backend == "dask":
        pytest.importorskip("distributed")
    work, err = tmp_path / "w", tmp_path / "err"
    proc, workers = busy_build(data, work, err, "--backend", backend)
    try:
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        rc = proc.wait(timeout=60)
        exited = time.monotonic() - t0
        gone = wait_gone(workers, 15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    text = err.read_text()
    print(f"\nCtrl-C ({backend}): exited in {exited:.1f} s, its {len(workers)} child processes gone "
          f"{gone:.1f} s later")
    assert rc == 130 and "Traceback" not in text, text[-3000:]
    assert text.strip().splitlines()[-1] == "interrupted: stopped; run the same command again to resume", text[-2000:]
    assert exited < 30
    assert not (work / ".lock").exists()
    for p in work.rglob("*"):  # whatever has a finished name is finished; a temp file says it is one
        if p.name.endswith(".tmp"):
            assert p.name.startswith("."), p
        elif p.suffix == ".parquet":
            pq.read_metadata(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())


def test_sigkilled_build_leaves_no_workers_behind(data, tmp_path):
    """`kill -9` of the build's process alone (not its group): its workers notice their parent is
    gone and exit, instead of working on beside the next build for minutes."""
    work, err = tmp_path / "w", tmp_path / "err"
    proc, workers = busy_build(data, work, err)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        gone = wait_gone(workers, 15)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"\nSIGKILL: the build's {len(workers)} child processes gone {gone:.1f} s later")
    # (the next build resumes there: test_killed_at_every_stage_resumes_to_the_same_result)


# --- 4. bad input: one row with a status and a reason per video ------------------------------------
# (case, maker in tests/fixtures/reliability_media.py, manifest status, words in its error, faces statuses allowed)
VIDEO_CASES = [
    ("zero-byte .mp4", "zero_bytes", "unreadable", "empty file (0 bytes)", {"decode_error"}),
    ("not a video", "not_a_video", "unreadable", "not a readable video", {"decode_error"}),
    ("truncated", "truncated", "ok", None, {"face", "truncated", "decode_error"}),
    ("symlink to itself", "symlink_to_itself", "unreadable", "symlink loop", {"decode_error"}),
    ("symlink loop of two", "symlink_loop_of_two", "unreadable", "symlink loop", {"decode_error"}),
    ("dangling symlink", "dangling_symlink", "unreadable", "dangling symlink", {"decode_error"}),
    ("FIFO that never delivers", "fifo", "unreadable", "not a regular file (FIFO)", {"decode_error"}),
    ("folder named .mp4", "folder", "unreadable", "not a regular file (folder)", {"decode_error"}),
    ("one frame", "one_frame", "ok", None, {"face"}),
    ("1x1 MPEG-4", "size_1x1_mpeg4", "ok", None, {"no_face"}),
    ("1x1 FFV1 in Matroska", "size_1x1_ffv1_matroska", "ok", None, {"no_face"}),
    ("2x2 H.264", "size_2x2_h264", "ok", None, {"no_face"}),
    ("4000x3000", "size_4000x3000", "ok", None, {"face"}),
    ("grayscale (gray pix_fmt)", "grayscale", "ok", None, {"face"}),
    ("10-bit yuv420p10le", "ten_bit", "ok", None, {"face"}),
    ("rotated 90 (display matrix)", "rotated_display_matrix", "ok", None, {"face"}),
]


def _case_name(case) -> str:
    values = case.values if hasattr(case, "values") else case
    return values[0]


@pytest.fixture(scope="module")
def video_cases(tmp_path_factory) -> dict:
    """One real `mesodata build` over a DFDC part holding every case of VIDEO_CASES."""
    root = tmp_path_factory.mktemp("cases")
    part = root / "DFDC/dfdc_train_part_0"
    part.mkdir(parents=True)
    meta = {}
    for case in VIDEO_CASES:
        _, maker, *_ = case.values if hasattr(case, "values") else case
        getattr(media, maker)(part / f"{maker}.mp4")
        meta[f"{maker}.mp4"] = {"label": "REAL", "split": "train"}
    (part / "metadata.json").write_text(json.dumps(meta))
    work = root / "w"
    proc = mesodata(*build_args(root, work, "--sources", "dfdc", "--workers", "2"), timeout=240)
    rows = {r["video_id"].rsplit("/", 1)[1]: r for r in pq.read_table(work / "manifest.parquet").to_pylist()}
    faces = {}
    for e in json.loads((work / "faces/_index.json").read_text())["parts"]:
        faces[e["video_id"].rsplit("/", 1)[1]] = pq.read_table(
            work / "faces" / e["part"], columns=["status", "error", "frame_index"]).to_pylist()
    return {"proc": proc, "manifest": rows, "faces": faces}


@pytest.mark.parametrize("what,maker,status,error,face_statuses", VIDEO_CASES, ids=map(_case_name, VIDEO_CASES))
def test_odd_video_gets_a_row_with_status_and_reason(video_cases, what, maker, status, error, face_statuses):
    proc = video_cases["proc"]
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    names = [maker] + ([f"{maker}_other"] if maker == "symlink_loop_of_two" else [])
    for name in names:
        m = video_cases["manifest"][name]  # never dropped
        assert m["status"] == status, m
        if error:
            assert error in m["error"], m
        else:
            assert m["error"] is None and m["frames"] >= 1 and m["width"] >= 1, m
        rows = video_cases["faces"][name]
        assert rows and {r["status"] for r in rows} <= face_statuses | {"no_face", "rejected"}, rows
        assert any(r["status"] in face_statuses for r in rows), rows
        for r in rows:
            if r["status"] in ("decode_error", "truncated"):
                assert r["error"], r  # a reason, always
        if status != "ok":
            assert rows == [{"status": "decode_error", "frame_index": None,
                             "error": f"manifest says unreadable: {m['error']}"}]
    if maker == "one_frame":
        assert [r["frame_index"] for r in video_cases["faces"][maker]] == [0]


def test_stalled_read_is_abandoned_at_the_decode_timeout(tmp_path):
    """A FIFO fed half a video by a writer that then stalls (a hung network file system): the real
    decoder blocks in read(); the faces unit gives up at its decode timeout and records why."""
    video = media.encode(tmp_path / "v.mp4", list(media.face_frames(6)) * 4)
    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)
    fd = media.write_partial_into(fifo, video, 0.5)
    try:
        code = ("import json, sys; from mesodata.pipeline.stages import faces; "
                "p = faces.normalize_params({'frames': 4, 'verify': 'none', 'decode_timeout': 2}); "
                "rows = faces.extract_rows(sys.argv[1], 24, 25.0, p); "
                "print(json.dumps([[r['status'], r['error']] for r in rows]))")
        # without the decode deadline the read blocks until this timeout (the writer never closes)
        proc = subprocess.run([sys.executable, "-c", code, str(fifo)], cwd=REPO, capture_output=True,
                              text=True, timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert len(rows) == 4 and rows[-1][0] == "decode_error" and "decode timeout" in rows[-1][1], rows


def decode_seconds(path: Path, frames: int, runs: int = 3) -> list[float]:
    """What --decode-timeout measures for `path` (the faces stage's decoding alone, as its
    Deadline counts it, with the stage's frame plan), `runs` times."""
    import av

    from mesodata.pipeline.frames import Deadline, FrameSampler, plan_indices

    with av.open(str(path)) as c:
        n = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    out = []
    for _ in range(runs):
        d = Deadline(1e9)
        for _ in FrameSampler(str(path), plan_indices(n, frames=frames), deadline=d):
            pass
        out.append(d.elapsed())
    return out


def faces_rows(work: Path) -> dict[str, list[dict]]:
    index = json.loads((work / "faces/_index.json").read_text())["parts"]
    return {e["video_id"].rsplit("/", 1)[1]: pq.read_table(work / "faces" / e["part"]).to_pylist() for e in index}


def test_slow_decoder_hits_the_decode_timeout_and_the_build_goes_on(tmp_path):
    """Through `mesodata build`: a huge video that decodes longer than --decode-timeout is recorded
    as decode_error, and the other video of the build still gets its faces.

    The timeout counts each video's decoding only, not the worker's start-up, model loading or face
    work (which once made the small video time out too on a loaded 2-core machine). It is set
    between the two videos' decode times as measured here (their geometric mean), so it is as far
    from each as the machine's speed allows: a slower machine slows both."""
    part = tmp_path / "DFDC/dfdc_train_part_0"
    frames = media.face_frames(6)
    slow = media.encode(part / "slow.mp4", [cv2_resize(frames[i % 6], (4000, 3000)) for i in range(12)],
                        codec="mpeg4", fmt="mp4")
    media.one_frame(part / "fine.mp4")
    (part / "metadata.json").write_text(json.dumps({n: {"label": "REAL"} for n in ("slow.mp4", "fine.mp4")}))
    slow_s, fine_s = min(decode_seconds(slow, 4)), max(decode_seconds(part / "fine.mp4", 4))
    assert slow_s > 25 * fine_s, (slow_s, fine_s)  # else these videos cannot tell the two apart
    timeout = (slow_s * fine_s) ** 0.5
    print(f"\ndecoding: slow {slow_s:.3f} s, fine {fine_s:.4f} s; --decode-timeout {timeout:.3f} s")
    work = tmp_path / "w"
    proc = mesodata(*build_args(tmp_path, work, "--sources", "dfdc", "--workers", "1",
                                "--decode-timeout", f"{timeout:.4f}"), timeout=240)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    by = faces_rows(work)
    assert any(r["status"] == "decode_error" and "decode timeout" in r["error"] for r in by["slow"]), by["slow"]
    assert [r["status"] for r in by["fine"]] == ["face"]


def test_decoder_that_never_returns_is_killed_and_the_build_goes_on(tmp_path):
    """A worker hung inside the decoder: stopped with SIGSTOP while it decodes, it runs nothing
    more, so no in-process timeout (alarm, check between frames) can end it. The executor kills it
    a moment after --decode-timeout, records the video as decode_error with the reason, and the
    next video (queued behind it, in a new worker) still gets its face."""
    part = tmp_path / "DFDC/dfdc_train_part_0"
    frames = media.face_frames(6)
    media.encode(part / "a_hung.mp4", [cv2_resize(frames[i % 6], (4000, 3000)) for i in range(12)],
                 codec="mpeg4", fmt="mp4")
    media.one_frame(part / "b_fine.mp4")
    (part / "metadata.json").write_text(json.dumps({n: {"label": "REAL"} for n in ("a_hung.mp4", "b_fine.mp4")}))
    work, err = tmp_path / "w", tmp_path / "err"
    with open(err, "w") as f:
        proc = start(*build_args(tmp_path, work, "--sources", "dfdc", "--workers", "1", "--frames", "2",
                                 "--decode-timeout", "2"), stderr=f)
    try:
        hung = None
        deadline = time.monotonic() + 120
        while hung is None:  # a faces worker with the video open is decoding it
            assert proc.poll() is None, f"the build ended (rc {proc.returncode}) first: {err.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "timed out waiting for a worker decoding a_hung.mp4"
            if (work / "faces").is_dir():
                hung = next((c for c in children(proc.pid) if has_open(c, "a_hung.mp4")), None)
            time.sleep(0.005)
        os.kill(hung, signal.SIGSTOP)
        t0 = time.monotonic()
        rc = proc.wait(timeout=120)
        took = time.monotonic() - t0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    text = err.read_text()
    print(f"\nworker {hung} stopped mid-decode; the build finished {took:.1f} s later")
    assert rc == 0 and "Traceback" not in text, text[-3000:]
    assert not running(hung)
    by = faces_rows(work)
    [row] = by["a_hung"]
    assert row["status"] == "decode_error" and row["frame_index"] is None, row
    assert "after the 2 s decode timeout" in row["error"] and "worker process was killed" in row["error"], row
    assert row["error"] in text  # said in the log too
    assert [r["status"] for r in by["b_fine"]] == ["face"]
    index = json.loads((work / "faces/_index.json").read_text())["parts"]
    assert [e.get("timeout") for e in index] == [2.0, None]  # a longer timeout redoes it


def has_open(pid: int, name: str) -> bool:
    """Does process `pid` hold a file called `name` open (from /proc)?"""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(fd).endswith("/" + name):
                return True
    return False


def cv2_resize(frame, size):
    import cv2

    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)


# --- 5. full disk --------------------------------------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(d)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_full_disk_is_one_line_naming_the_path_and_leaves_nothing_half_written(sample_root, tiny_disk):
    work = tiny_disk / "w"
    proc = mesodata(*build_args(sample_root, work, "--sources", "dfdc", "--workers", "2"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: no space left on device while writing {re.escape(str(work))}/\S+", last), last
    assert Path(last.rsplit(" ", 1)[1]).parent.is_dir()
    assert Work(work).state("faces") is None  # the stage is not recorded as done
    for p in work.rglob("*"):
        assert not p.name.endswith(".tmp"), p  # no temp file left behind
        if p.suffix == ".parquet":
            pq.read_metadata(p)  # every file that looks complete is complete
        elif p.suffix == ".json":
            json.loads(p.read_text())
    assert not (work / ".lock").exists()


# --- 7. untrusted files ------------------------------------------------------------------------------
UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("joblib", "load"),
    ("cloudpickle", "load"), ("cloudpickle", "loads"), ("dill", "load"), ("dill", "loads"),
    ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"), ("pd", "read_pickle"),
    ("pandas", "read_pickle"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
}


def unsafe_loads(source: str) -> list[str]:
    """Calls in `source` that may unpickle what they read (or run code from YAML)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        name = node.func.attr
        kw = {k.arg: k.value for k in node.keywords}
        if (owner, name) in UNSAFE_CALLS:
            found.append(f"line {node.lineno}: {owner}.{name}")
        elif owner == "torch" and name == "load":
            v = kw.get("weights_only")
            if not (isinstance(v, ast.Constant) and v.value is True):
                found.append(f"line {node.lineno}: torch.load without weights_only=True")
        elif owner == "np" and name == "load":
            v = kw.get("allow_pickle")
            if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                found.append(f"line {node.lineno}: np.load with allow_pickle")
        elif name == "loads" and owner == "sio" and "trusted" not in kw:
            found.append(f"line {node.lineno}: skops load without a trusted list")
    return found


def test_unsafe_load_scanner_finds_what_it_must():
    bad = ("import pickle, torch, numpy as np, yaml\npickle.load(f)\ntorch.load(p)\n"
           "torch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\nyaml.load(t)\n")
    assert len(unsafe_loads(bad)) == 5
    assert unsafe_loads("torch.load(p, weights_only=True)\nnp.load(p)\nyaml.safe_load(t)\n") == []


def test_nothing_the_tool_reads_is_unpickled():
    files = [p for d in ("pipeline", "detector") for p in (REPO / d).rglob("*.py")]
    assert len(files) > 20
    problems = {str(p.relative_to(REPO)): f for p in files if (f := unsafe_loads(p.read_text()))}
    assert problems == {}


def test_a_pickled_object_in_a_weights_file_is_refused_and_never_runs(tmp_path):
    torch = pytest.importorskip("torch")
    from mesodata.detector.infer import load_weights
    from mesodata.pipeline.errors import UserError

    marker = tmp_path / "pickled-code-ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "evil.pt"
    torch.save({"arch": "meso4", "state_dict": {"w": Payload()}}, evil)
    with pytest.raises(UserError, match="refusing to unpickle"):
        load_weights(evil)
    assert not marker.exists()


def test_rotated_video_is_turned_upright(tmp_path):
    """A phone video stored sideways: the manifest gives its displayed size, the crop an upright face."""
    import av

    from mesodata.pipeline.probe import probe
    from mesodata.pipeline.stages.faces import extract_faces

    path = tmp_path / "phone.mp4"
    media.rotated_display_matrix(path)
    with av.open(str(path)) as c:
        stored = (c.streams.video[0].width, c.streams.video[0].height)
    info = probe(str(path))
    assert (info["width"], info["height"]) == (stored[1], stored[0]) and stored[0] < stored[1]
    rows = extract_faces(str(path), {"frames": 3, "verify": "dlib"}).to_pylist()
    assert [r["status"] for r in rows] == ["face"] * 3
    box = rows[0]["bbox"]
    assert box["x"] + box["w"] <= info["width"] and box["y"] + box["h"] <= info["height"]
