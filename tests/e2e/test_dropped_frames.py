"""`mesodata frames`: every sampled frame that is not in the benchmark is listed, with its status
and reason, and can be looked at on a contact sheet."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def built(sample_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("frames") / "work"
    proc = _cli("build", "--sources", "celebdf", "--data-root", sample_root, "--work", work, "--frames", "4",
                cwd=work.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


def test_every_dropped_frame_is_listed_with_its_reason(built, tmp_path):
    proc = _cli("frames", "--work", built, "--csv", tmp_path / "all.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    listed = pd.read_csv(tmp_path / "all.csv")
    faces = pd.concat(
        [pq.read_table(p).to_pandas() for p in sorted((built / "faces").glob("*.parquet"))])
    dedupe = pq.read_table(built / "dedupe.parquet").to_pandas()
    not_faces = faces[faces["status"] != "face"]
    dropped_dups = dedupe[~dedupe["kept"]]
    assert len(listed) == len(not_faces) + len(dropped_dups) > 0
    assert set(listed["status"]) == set(not_faces["status"]) | ({"duplicate"} if len(dropped_dups) else set())
    # The faces stage's own reason, row for row, for every frame that is not a face.
    mine = listed[listed["status"] != "duplicate"].set_index(["video_id", "status"]).sort_index()
    theirs = not_faces.assign(reason=not_faces["error"].fillna("")).set_index(["video_id", "status"]).sort_index()
    assert list(mine["reason"].fillna("")) == list(theirs["reason"])
    dups = listed[listed["status"] == "duplicate"]
    assert set(zip(dups["video_id"], dups["frame_index"])) == set(zip(dropped_dups["video_id"], dropped_dups["frame_index"]))
    assert dups["reason"].str.contains("duplicate \\(cluster \\d+\\)").all()
    assert f"{len(listed)} dropped frames" in proc.stdout


def test_filters_and_contact_sheet(built, tmp_path):
    proc = _cli("frames", "--work", built, "--status", "duplicate", "--status", "no_face", "--limit", "7",
                "--csv", tmp_path / "some.csv", "--contact-sheet", tmp_path / "sheet.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    some = pd.read_csv(tmp_path / "some.csv")
    assert set(some["status"]) <= {"duplicate", "no_face"} and len(some) > 0
    with Image.open(tmp_path / "sheet.png") as im:
        assert im.format == "PNG" and im.width > 600 and im.height > 250
    bad = _cli("frames", "--work", built, "--source", "dfdc", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --source 'dfdc' is not in this work dir; it holds celebdf"
