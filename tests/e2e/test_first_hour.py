"""A newcomer's first hour (issue 17): every mistake is answered in one line, and a failed command
leaves nothing behind. Each test runs the real `mesodata` command on real files.

(The interruption tests -- Ctrl-C, SIGKILL --, verify -> repair and train-detector's early check of
its run dir need a real build and split to interrupt, corrupt or train on: they are in
tests/e2e/test_reliability.py, beside the other kills.)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import reliability_media as media

REPO = Path(__file__).resolve().parents[2]
FAST = ["--frames", "2", "--verify", "none", "--workers", "1"]


def mesodata(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single `error: ...` line of a refused command (exit `code`, no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), \
        (proc.returncode, proc.stderr[-3000:])
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A data root holding DFDC only: one part of two short real face clips."""
    root = tmp_path_factory.mktemp("first-hour-data")
    part = root / "DFDC/dfdc_train_part_0"
    part.mkdir(parents=True)
    media.one_frame(part / "a.mp4")
    media.encode(part / "b.mp4", list(media.face_frames(3)))
    (part / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "REAL"}, "b.mp4": {"label": "FAKE",
                                                                                          "original": "a.mp4"}}))
    return root


@pytest.fixture(scope="module")
def built(data, tmp_path_factory) -> Path:
    """A finished build of `data`."""
    work = tmp_path_factory.mktemp("first-hour-work") / "w"
    proc = mesodata("build", "--sources", "dfdc", "--data-root", data, "--work", work, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


# --- 1. a work dir that cannot be written ----------------------------------------------------------
def test_work_dir_under_a_file_is_one_line_for_every_command(data, tmp_path):
    """--work names a path under a regular file (works as root too: no permission bits involved)."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder\n")
    work = blocker / "w"
    commands = {
        "build": ["build", "--sources", "dfdc", "--data-root", data, "--work", work, *FAST],
        "split": ["split", "--work", work],
        "status": ["status", "--work", work],
        "verify": ["verify", "--work", work],
        "verify --repair": ["verify", "--repair", "--work", work],
        "build into the file itself": ["build", "--sources", "dfdc", "--data-root", data, "--work", blocker, *FAST],
        "sample": ["sample", blocker / "sample"],
    }
    for what, args in commands.items():
        line = one_line_error(mesodata(*args))
        assert str(blocker) in line, (what, line)
    assert blocker.read_text() == "not a folder\n"


@pytest.fixture
def read_only_copy(built, tmp_path):
    """`built` on a read-only file system (a tmpfs remounted read-only); skipped where mounting is
    not allowed (not root, or a container without the capability)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(built, mnt / "w", symlinks=True)
        if subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        yield mnt / "w"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_work_dir_is_one_line_and_reading_still_works(data, read_only_copy):
    work = read_only_copy
    for args in (["build", "--sources", "dfdc", "--data-root", data, "--work", work, *FAST],
                 ["split", "--work", work], ["verify", "--repair", "--work", work]):
        line = one_line_error(mesodata(*args))
        assert line == f"error: work dir {work} cannot be written: read-only file system", line
    for args in (["status", "--work", work], ["verify", "--work", work]):  # nothing to write: fine
        proc = mesodata(*args)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr


# --- 2. a failed command leaves nothing behind -------------------------------------------------------
def test_a_refused_build_leaves_no_work_dir(data, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    (broken / "DFDC/dfdc_train_part_0/metadata.json").write_text('{"a.mp4": {"label": "REAL"},')
    cases = {  # refused before the work dir is needed, and refused once it has been made
        "unknown source": ["--sources", "dfdc,ffpp", "--data-root", data],
        "no data root": ["--sources", "dfdc", "--data-root", tmp_path / "nowhere"],
        "a source the data root lacks": ["--sources", "celebdf", "--data-root", data],
        "--scheduler without dask": ["--sources", "dfdc", "--data-root", data, "--scheduler", "tcp://127.0.0.1:1"],
        "malformed metadata": ["--sources", "dfdc", "--data-root", broken],
    }
    for i, (what, args) in enumerate(cases.items()):
        parent = tmp_path / f"new{i}"
        proc = mesodata("build", *args, "--work", parent / "deeper" / "w", *FAST)
        one_line_error(proc)
        assert not parent.exists(), (what, sorted(p.relative_to(parent).as_posix() for p in parent.rglob("*")))


def test_a_failed_command_keeps_an_existing_work_dir(data, built, tmp_path):
    """Only what the failed command made is removed: a work dir that was there stays, whole."""
    work = tmp_path / "w"
    shutil.copytree(built, work)
    before = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
    one_line_error(mesodata("build", "--sources", "dfdc", "--data-root", tmp_path / "nowhere", "--work", work, *FAST))
    one_line_error(mesodata("build", "--sources", "dfdc", "--data-root", tmp_path / "nowhere", "--work", work,
                            "--scheduler", "tcp://127.0.0.1:1", *FAST))
    one_line_error(mesodata("build", "--sources", "dfdc", "--data-root", data, "--work", work,
                            "--scheduler", "tcp://127.0.0.1:1", *FAST))
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == before


# --- 3. names -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,expected", [
    (["--sources", "ffpp"], "unknown source 'ffpp'; did you mean 'ff++'?"),
    (["--sources", "dfdc,celebDF"], "unknown source 'celebDF'; did you mean 'celebdf'?"),
    (["--source-root", "FaceForensics=/x"], "did you mean 'ff++'?"),
    (["--compression", "C32"], "did you mean 'c23'?"),
    (["--verify", "dlb"], "did you mean 'dlib'?"),
], ids=["ffpp", "celebDF", "source-root", "compression", "verify"])
def test_an_unknown_name_suggests_the_closest(data, tmp_path, args, expected):
    line = one_line_error(mesodata("build", "--data-root", data, "--work", tmp_path / "w", *args))
    assert expected in line, line
    assert not (tmp_path / "w").exists()


def test_an_unknown_command_or_split_option_value_suggests_the_closest(built):
    assert "did you mean 'build'?" in one_line_error(mesodata("biuld", "--work", built))
    line = one_line_error(mesodata("split", "--work", built, "--protocol", "oficial"))
    assert "did you mean 'official'?" in line, line


def test_a_data_root_with_some_sources_names_them_and_the_exact_sources_to_run(data, tmp_path):
    some = tmp_path / "some"
    shutil.copytree(data, some)
    (some / "FaceForensics++").mkdir()  # ff++ is there too (what it holds is the adapter's concern)
    line = one_line_error(mesodata("build", "--data-root", some, "--work", tmp_path / "w", *FAST))
    assert "holds DFDC/ (dfdc), FaceForensics++/ (ff++) only" in line, line
    assert "no Celeb-DF-v2/ for celebdf" in line and "--sources dfdc,ff++" in line, line
    # a folder in the wrong case is pointed at
    root = tmp_path / "root"
    shutil.copytree(data, root / "dfdc")
    line = one_line_error(mesodata("build", "--sources", "dfdc", "--data-root", root, "--work", tmp_path / "w2"))
    assert f"dfdc/ looks like DFDC/: rename it, or --source-root dfdc={root / 'dfdc'}" in line, line


# --- 4. predict on a file that is not a video ---------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder holding real (untrained) Meso-4 weights in the project's format, recorded in its
    metrics.json as a finished run records them (predict uses only what metrics.json names)."""
    torch = pytest.importorskip("torch")
    from mesodata.detector.infer import save_weights
    from mesodata.detector.models import create_model

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    save_weights(create_model("meso4"), "meso4", run / "meso4.pt")
    (run / "metrics.json").write_text(json.dumps(
        {"config": {"models": ["meso4"]}, "models": {"meso4": {"weights": "meso4.pt"}}}))
    return run


def test_predict_on_a_file_that_is_not_a_video_says_so_as_build_does(data, run_dir, tmp_path):
    from mesodata.pipeline.probe import probe

    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(data / "DFDC/dfdc_train_part_0/b.mp4", folder / "good.mp4")
    media.not_a_video(folder / "page.mp4")  # a saved error page
    media.zero_bytes(folder / "empty.mp4")
    want = probe(str(folder / "page.mp4"))
    assert want["status"] == "unreadable"
    line = one_line_error(mesodata("predict", folder / "page.mp4", "--run-dir", run_dir, "--frames", "2"))
    assert line == f"error: {folder / 'page.mp4'} is unreadable: {want['error']}", line
    proc = mesodata("predict", folder, "--run-dir", run_dir, "--frames", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.rsplit("/", 1)[1]: line for line in proc.stdout.splitlines() if line.endswith(".mp4")}
    assert f"unreadable: {want['error']}" in rows["page.mp4"] and "no face found" not in rows["page.mp4"], rows
    assert "unreadable: empty file (0 bytes)" in rows["empty.mp4"], rows
    assert rows["good.mp4"].split()[1] in ("fake", "real"), rows  # a score and a label
