"""`mesodata verify` finds every kind of corruption in recorded artifacts."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mesodata.pipeline.errors import UserError
from mesodata.pipeline.runner import Work
from mesodata.pipeline.stages import manifest
from mesodata.pipeline.verify import verify_work
from tests.e2e.test_manifest import tiny_video


@pytest.fixture
def built(tmp_path):
    for p in ("Celeb-real/id1_0000.mp4", "Celeb-synthesis/id1_id2_0000.mp4"):
        tiny_video(tmp_path / "Celeb-DF-v2" / p)
    work = Work(tmp_path / "w")
    manifest.run(work, tmp_path, ["celebdf"])
    return work


def problems(work):
    return {r["file"]: r["problem"] for r in verify_work(work)}


def test_clean_work_dir_verifies(built):
    assert problems(built) == {"manifest.parquet": None, "reports/manifest.json": None}


def test_flipped_byte_is_caught(built):
    path = built.path("manifest.parquet")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert problems(built)["manifest.parquet"] == "content hash differs from the one recorded"
    proc = subprocess.run([sys.executable, "-m", "mesodata.pipeline.cli", "verify", "--work", str(built.root)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "1 bad" in proc.stdout


def test_truncated_and_missing_files_are_caught(built):
    path = built.path("manifest.parquet")
    path.write_bytes(path.read_bytes()[:-10])
    assert problems(built)["manifest.parquet"].startswith("size ")
    built.path("reports/manifest.json").unlink()
    assert problems(built)["reports/manifest.json"] == "missing"


def test_schema_drift_is_caught(built):
    """A file rewritten with another schema but a matching record is still refused."""
    import json

    from mesodata.pipeline.storage import sha256 as sha256_file

    path = built.path("manifest.parquet")
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("label"), "label",
                             table.column("label").cast(pa.int64()))
    pq.write_table(table, path)
    state_path = built.path(".state/manifest.json")
    state = json.loads(state_path.read_text())
    state["outputs"]["manifest.parquet"].update(sha256=sha256_file(path), bytes=path.stat().st_size)
    state_path.write_text(json.dumps(state))
    assert problems(built)["manifest.parquet"] == "schema differs from schemas/manifest.yaml"


def test_nothing_to_verify(tmp_path):
    with pytest.raises(UserError, match="no stage has finished"):
        verify_work(Work(tmp_path))


def test_damaged_files_make_their_stage_stale_until_it_runs_again(built, tmp_path):
    """What `verify` found corrupt is remembered: the stage is no longer up to date, its next run
    deletes the file before redoing it, and recording the stage forgets the finding."""
    path = built.path("manifest.parquet")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    bad = [r for r in verify_work(built) if r["problem"]]
    assert [r["file"] for r in bad] == ["manifest.parquet"]
    built.mark_damaged(bad)
    assert built.status(["manifest"])[0]["status"] == "stale"
    manifest.run(built, tmp_path, ["celebdf"])  # redone: the parts are still there, the table rewritten
    assert problems(built) == {"manifest.parquet": None, "reports/manifest.json": None}
    assert built.damaged() == {} and built.status(["manifest"])[0]["status"] == "done"
