"""The faces stage in `mesodata build` on the sample: rows for every video, report, contact
sheets, a killed build that resumes, and a rerun that does nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import psutil
import pyarrow.parquet as pq
import pytest

from mesodata.pipeline import schema
from mesodata.pipeline.frames import plan_indices
from mesodata.pipeline.runner import Work
from mesodata.pipeline.stages import faces, manifest

MESODATA = str(Path(sys.executable).with_name("mesodata"))
SOURCES = "celebdf,dfdc"


def _build(data: Path, work: Path, workers: int) -> list[str]:
    return [MESODATA, "build", "--data-root", str(data), "--work", str(work), "--sources", SOURCES,
            "--workers", str(workers)]


@pytest.fixture(scope="module")
def resumed(sample_root, tmp_path_factory):
    """Build in a subprocess, SIGKILL it once a few face parts exist, then build again twice."""
    base = tmp_path_factory.mktemp("faces-stage")
    data, work = base / "data", base / "work"
    shutil.copytree(sample_root, data)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_build(data, work, 1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    parts_dir = work / "faces"
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 240:
        if len(list(parts_dir.glob("*.parquet"))) >= 3:
            break
        time.sleep(0.02)
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # its worker processes notice within a second that their parent is gone and exit; one may finish
    # the unit in hand first, so count the parts once they are all gone
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, alive
    killed_parts = len(list(parts_dir.glob("*.parquet")))
    state_after_kill = (work / ".state" / "faces.json").exists()
    second = subprocess.run(_build(data, work, 2), capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    state1 = json.loads((work / ".state" / "faces.json").read_text())
    third = subprocess.run(_build(data, work, 2), capture_output=True, text=True, env=env, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    state2 = json.loads((work / ".state" / "faces.json").read_text())
    return {"work": work, "killed_parts": killed_parts, "state_after_kill": state_after_kill,
            "second": second, "state1": state1, "third": third, "state2": state2}


def test_killed_build_resumes_without_redoing_finished_videos(resumed):
    c = resumed["state1"]["counts"]
    assert not resumed["state_after_kill"]  # it really died inside the stage
    assert 3 <= resumed["killed_parts"] < c["units"]
    assert c["resumed"] == resumed["killed_parts"]
    assert c["computed"] == c["units"] - resumed["killed_parts"]


def test_rerun_of_a_finished_build_does_no_work(resumed):
    assert resumed["state2"] == resumed["state1"]  # not even re-recorded
    assert "faces: up to date" in resumed["third"].stderr
    assert "Faces: face yield" not in resumed["third"].stdout


def test_every_manifest_video_has_rows_in_manifest_order(resumed):
    work = Work(resumed["work"])
    m = manifest.read(work).to_pylist()
    t = faces.read(work)
    assert t.schema.remove_metadata() == schema.load("faces").remove_metadata()
    ids = t.column("video_id").to_pylist()
    order = list(dict.fromkeys(ids))
    assert order == [r["video_id"] for r in m]
    rows = {}
    for r in t.to_pylist():
        rows.setdefault(r["video_id"], []).append(r)
    for v in m:
        got = rows[v["video_id"]]
        assert all(r["source"] == v["source"] and r["label"] == v["label"] and r["group"] == v["group"]
                   for r in got)
        if v["status"] in ("missing", "unreadable"):
            assert len(got) == 1 and got[0]["status"] == "decode_error" and got[0]["frame_index"] is None
            assert v["status"] in got[0]["error"]
        else:
            assert [r["frame_index"] for r in got] == plan_indices(v["frames"], v["fps"], frames=32)
    nofaces = rows["dfdc/dfdc_train_part_0/dnofacexxx"]
    assert {r["status"] for r in nofaces} == {"no_face"} and all(r["image"] is None for r in nofaces)
    cut = [r["status"] for r in rows["celebdf/Celeb-real/id2_0001"]]
    assert "truncated" in cut and cut.count("face") >= 5
    assert cut.index("truncated") == len(cut) - cut.count("truncated")  # the tail is what is missing
    # columns on request, still in order
    assert faces.read(work, columns=["video_id", "status"]).column("video_id").to_pylist() == ids


def test_report_yield_and_low_yield_videos(resumed):
    work = resumed["work"]
    report = json.loads((work / "reports" / "faces.json").read_text())
    t = faces.read(Work(work), columns=["source", "status"]).to_pylist()
    for line in report["table"]:
        mine = [r for r in t if r["source"] == line["source"]]
        n_face = sum(r["status"] == "face" for r in mine)
        assert line["sampled"] == len(mine) and line["face"] == n_face
        assert line["yield"] == pytest.approx(n_face / len(mine), abs=1e-3)
    low = {v["video_id"] for v in report["below_min_yield"]}
    assert "dfdc/dfdc_train_part_0/dnofacexxx" in low
    assert "dfdc/dfdc_train_part_0/fnotavideo" in low
    assert "celebdf/Celeb-real/id0_0000" not in low
    assert report["detection"]["detect_width"] == faces.DEFAULTS["detect_width"]
    assert "Faces: face yield per source" in resumed["second"].stdout
    assert "dnofacexxx" in resumed["second"].stdout


def test_contact_sheet_per_source(resumed):
    work = resumed["work"]
    for source in SOURCES.split(","):
        img = cv2.imread(str(work / "reports" / f"faces-{source}.png"))
        assert img is not None and img.shape[1] > 8 * 160 and img.shape[0] >= 2 * 160
        assert img.std() > 30  # crops, not an empty canvas
    state = resumed["state1"]
    assert "reports/faces-dfdc.png" in state["outputs"]


def test_parts_are_per_video_parquet_under_faces(resumed):
    work = resumed["work"]
    index = json.loads((work / "faces" / "_index.json").read_text())["parts"]
    assert len(index) == resumed["state1"]["counts"]["videos"]
    for e in index:
        assert pq.ParquetFile(work / "faces" / e["part"]).metadata.num_rows == e["rows"]
