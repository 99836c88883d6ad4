"""A work dir moved or copied to another path is still up to date (issue 17, item 7): nothing in its
records names the folder it was built in, so `status` calls every stage done and `build` redoes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.fixtures import reliability_media as media

BUILD = ["--sources", "dfdc", "--frames", "2", "--verify", "none", "--workers", "1"]
STAGES = ("manifest", "faces", "dedupe")


def mesodata(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def records(work: Path) -> dict[str, bytes]:
    return {s: (work / ".state" / f"{s}.json").read_bytes() for s in STAGES}


def test_a_copied_then_moved_work_dir_is_up_to_date_and_nothing_is_redone(tmp_path):
    data = tmp_path / "data"
    part = data / "DFDC/dfdc_train_part_0"
    part.mkdir(parents=True)
    media.encode(part / "a.mp4", list(media.face_frames(4)))
    media.encode(part / "b.mp4", list(media.face_frames(5)))
    (part / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "REAL"},
                                                    "b.mp4": {"label": "FAKE", "original": "a.mp4"}}))
    built = tmp_path / "built-here"
    mesodata("build", "--data-root", data, "--work", built, *BUILD)
    before = records(built)

    copied = tmp_path / "elsewhere" / "copy"
    shutil.copytree(built, copied, symlinks=True)
    moved = tmp_path / "moved"
    built.rename(moved)  # the original path no longer exists
    for work in (copied, moved):
        for f in work.rglob("*"):
            if f.is_file():
                assert str(built).encode() not in f.read_bytes(), f"{f} names the folder it was built in"
        status = mesodata("status", "--work", work).stdout
        rows = {line.split()[0]: line.split()[1] for line in status.splitlines() if line.split()[:1] in ([s] for s in STAGES)}
        assert rows == {s: "done" for s in STAGES}, status
        out = mesodata("build", "--data-root", data, "--work", work, *BUILD).stderr
        for stage in STAGES:
            assert f"{stage}: up to date" in out, out
        assert records(work) == before  # same fingerprints, same finish times: nothing was redone
