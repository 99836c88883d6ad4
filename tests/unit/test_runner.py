"""The staged runner: fingerprints, atomic parts, resume, locks, schema checks on write."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mesodata.pipeline import atomic, schema
from mesodata.pipeline.errors import UserError
from mesodata.pipeline.runner import (Lock, Output, Stage, StageDef, Unit, Work, map_units, part_name, read_parts,
                                      run_stage, summarize)


def square(n: int) -> pa.Table:
    if n < 0:
        raise ValueError("negative unit")
    return pa.table({"n": [n], "sq": [n * n]})


def test_units_resume_and_keep_order(tmp_path):
    work = Work(tmp_path)
    stage = Stage("toy", "1", {"k": 1})
    parts = work.parts_dir(stage, work.fingerprint(stage))
    units = [Unit(f"u{i}", i) for i in range(6)]
    first = map_units(square, units[:4], parts, artifact=None, workers=2, desc="toy")
    assert summarize(first) == {"units": 4, "computed": 4, "resumed": 0}
    second = map_units(square, units, parts, artifact=None, workers=2, desc="toy")
    assert summarize(second) == {"units": 6, "computed": 2, "resumed": 4}
    assert read_parts(parts, [u.key for u in units]).column("sq").to_pylist() == [0, 1, 4, 9, 16, 25]


def test_a_failing_unit_leaves_no_part(tmp_path):
    work = Work(tmp_path)
    stage = Stage("toy", "1")
    parts = work.parts_dir(stage, work.fingerprint(stage))
    with pytest.raises(ValueError):
        map_units(square, [Unit("bad", -1)], parts, artifact=None, workers=1, desc="toy")
    assert not (parts / part_name("bad")).exists()
    assert [p.name for p in parts.iterdir()] == ["_fingerprint"]


def test_fingerprint_changes_with_params_and_upstream(tmp_path):
    work = Work(tmp_path)
    a = Stage("a", "1", {"x": 1})
    (tmp_path / "a.txt").write_text("a")
    work.record(a, ["a.txt"], {})
    b = Stage("b", "1", {"y": 2}, upstream=("a",))
    fp_b = work.fingerprint(b)
    assert work.fingerprint(Stage("b", "1", {"y": 3}, upstream=("a",))) != fp_b
    assert work.fingerprint(Stage("b", "2", {"y": 2}, upstream=("a",))) != fp_b
    work.record(Stage("a", "1", {"x": 2}), ["a.txt"], {})  # upstream redone with another parameter
    assert work.fingerprint(b) != fp_b
    with pytest.raises(UserError, match="stage 'zzz' has not run"):
        work.fingerprint(Stage("c", "1", upstream=("zzz",)))


def test_parts_of_another_fingerprint_are_discarded(tmp_path):
    work = Work(tmp_path)
    stage = Stage("toy", "1")
    parts = work.parts_dir(stage, "fp-one")
    (parts / part_name("u0")).write_bytes(b"old")
    assert (work.parts_dir(stage, "fp-one") / part_name("u0")).exists()
    assert not (work.parts_dir(stage, "fp-two") / part_name("u0")).exists()


def test_record_and_status(tmp_path):
    work = Work(tmp_path)
    pq.write_table(pa.table({"n": [1, 2, 3]}), tmp_path / "out.parquet")
    a = Stage("a", "1", {"x": 1})
    state = work.record(a, ["out.parquet"], {"rows": 3})
    assert state["outputs"]["out.parquet"]["rows"] == 3
    assert work.is_fresh(a) and not work.is_fresh(Stage("a", "1", {"x": 2}))
    assert [r["status"] for r in work.status(["a", "b"])] == ["done", "missing"]
    (tmp_path / "out.parquet").unlink()
    assert work.status(["a"])[0]["status"] == "stale"
    (tmp_path / ".state/a.json").write_text("{not json")
    assert work.state("a") is None  # a corrupt state entry is a miss, not a crash


def test_atomic_write_never_leaves_a_complete_looking_file(tmp_path):
    target = tmp_path / "t.parquet"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_full_disk_names_the_path(tmp_path):
    target = tmp_path / "out.json"
    os.symlink("/dev/full", tmp_path / "full")

    def fill(path):
        with open(tmp_path / "full", "wb") as f:
            f.write(b"x" * 10)
            f.flush()

    with pytest.raises(UserError, match=f"no space left on device while writing {target}"):
        with atomic.atomic_path(target) as tmp:
            fill(tmp)
    assert not target.exists()
    assert errno.ENOSPC  # the simulated error is the real errno from /dev/full


def test_schema_conform_checks_on_write():
    names = schema.load("manifest").names
    row = {n: None for n in names} | {"source": "dfdc", "video_id": "v", "path": "p", "method": "m",
                                      "group": "g", "status": "ok", "label": 1, "extra": "dropped"}
    out = schema.conform(pa.Table.from_pylist([row]), "manifest")
    assert out.schema.names == names and out.schema.field("label").type == pa.int8()
    with pytest.raises(ValueError, match="manifest: .*'group'"):
        schema.conform(pa.Table.from_pylist([row | {"group": None}]), "manifest")
    with pytest.raises(ValueError, match="lacks column"):
        schema.conform(pa.table({"source": ["x"]}), "manifest")
    with pytest.raises(ValueError, match="manifest"):
        schema.conform(pa.Table.from_pylist([row | {"label": "fake"}]), "manifest")


def test_schema_types_parse():
    assert schema.parse_type("struct<bytes: binary, path: string>") == pa.struct(
        [pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
    assert schema.parse_type("list<int32>") == pa.list_(pa.int32())
    with pytest.raises(ValueError):
        schema.parse_type("complex128")


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    work = Work(tmp_path)
    with Lock(work):
        with pytest.raises(UserError, match="is in use by process"):
            with Lock(work):
                pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    with Lock(work):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()


def test_parts_dir_sweeps_temp_files_of_killed_writers(tmp_path):
    """A worker killed mid-write (SIGKILL, a dead parent) leaves `.<name>.<random>.tmp`; the next run
    of the stage, which holds the work dir's lock, removes it."""
    work = Work(tmp_path)
    stage = Stage("toy", "1")
    parts = work.parts_dir(stage, "fp")
    (parts / part_name("u0")).write_bytes(b"kept")
    leftover = parts / f".{part_name('u1')}.k3j2h1.tmp"
    leftover.write_bytes(b"half")
    assert work.parts_dir(stage, "fp") == parts
    assert not leftover.exists() and (parts / part_name("u0")).read_bytes() == b"kept"


def test_lock_on_an_unwritable_work_dir_is_a_user_error_and_makes_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=f"work dir {blocker}/a/b cannot be written: {blocker} is not a folder"):
        with Lock(Work(blocker / "a" / "b")):
            pass
    assert blocker.read_text() == "x" and sorted(tmp_path.iterdir()) == [blocker]


def test_a_failed_command_removes_the_work_dir_it_made_and_only_that(tmp_path):
    new = tmp_path / "new" / "w"
    with pytest.raises(UserError):
        with Lock(Work(new)):
            assert new.is_dir()
            (new / ".parts").mkdir()  # empty folders only: nothing to resume from
            raise UserError("refused its input")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError):  # a run that wrote something keeps it (resume)
        with Lock(Work(new)):
            atomic.write_bytes(new / ".parts/toy/_fingerprint", b"fp")
            raise ValueError("a unit failed")
    assert (new / ".parts/toy/_fingerprint").exists() and not (new / ".lock").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(UserError):
        with Lock(Work(existing)):
            raise UserError("refused")
    assert existing.is_dir()  # not made by the command: stays


# --- the stage contract: run_stage does the bookkeeping of a declared stage ---------------------------
def _toy_check(raw: dict) -> dict:
    n = raw.get("n", 3)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UserError(f"The 'n' parameter of toy must be an int in the range [0, inf). Got {n!r} instead.")
    return {"n": n}


def _toy_combine(run) -> Output:
    table = run.parts.table()
    return Output(report={"sum": sum(table.column("sq").to_pylist())}, counts={"n": table.num_rows, **run.parts.summary})


TOY = StageDef("toy", "1", check=_toy_check, plan=lambda run: [Unit(f"u{i}", i) for i in range(run.params["n"])],
               unit=square, combine=_toy_combine, print_report=lambda report: print(f"toy sum {report['sum']}"))


def test_run_stage_computes_skips_when_fresh_and_resumes(tmp_path, capsys):
    work = Work(tmp_path)
    st = run_stage(work, TOY, {"n": 4}, workers=1)
    assert st["counts"] == {"n": 4, "units": 4, "computed": 4, "resumed": 0}
    assert json.loads((tmp_path / "reports" / "toy.json").read_text()) == {"sum": 14}
    assert capsys.readouterr().out.strip() == "toy sum 14"  # the stage's own report, printed by the runner
    assert set(st["outputs"]) == {"reports/toy.json"} and st["params"] == {"n": 4}
    again = run_stage(work, TOY, {"n": 4}, workers=1)  # fresh: nothing computed, nothing printed
    assert again == st and capsys.readouterr().out == ""
    more = run_stage(work, TOY, {"n": 6}, workers=2)  # another parameter: another fingerprint, new parts
    assert more["counts"]["computed"] == 6 and more["fingerprint"] != st["fingerprint"]
    (work.path(".parts", "toy") / part_name("u5")).unlink()
    (work.path(".state", "toy.json")).unlink()  # killed before it recorded: only the missing unit is redone
    resumed = run_stage(work, TOY, {"n": 6}, workers=1)
    assert resumed["counts"] == {"n": 6, "units": 6, "computed": 1, "resumed": 5}
    assert resumed["fingerprint"] == more["fingerprint"]
    with pytest.raises(UserError, match="The 'n' parameter of toy must be an int"):
        run_stage(work, TOY, {"n": -1})


def test_run_stage_needs_its_upstream(tmp_path):
    import dataclasses

    after = dataclasses.replace(TOY, name="after", upstream=("toy",))
    with pytest.raises(UserError, match="stage 'toy' has not run"):
        run_stage(Work(tmp_path), after, {})
    run_stage(Work(tmp_path), TOY, {"n": 2})
    assert run_stage(Work(tmp_path), after, {})["upstream"] == ["toy"]


def test_declared_parameters_are_checked_in_one_place():
    from mesodata.pipeline.runner import Param, check_params

    declared = {"n": Param(3, int, 1), "rate": Param(0.5, float, 0.0, 1.0), "mode": Param("a", choices=("a", "b")),
                "step": Param(None, float, 0.0, open_low=True), "flag": Param(False, bool)}
    assert check_params("toy", declared, {}) == {"n": 3, "rate": 0.5, "mode": "a", "step": None, "flag": False}
    got = check_params("toy", declared, {"n": 5, "rate": 1, "step": 2, "mode": None})
    assert got == {"n": 5, "rate": 1.0, "mode": "a", "step": 2.0, "flag": False}  # None is the default
    assert type(got["rate"]) is float and type(got["step"]) is float  # an int for a float: a float, as fingerprinted
    for raw, message in [
        ({"n": 0}, "The 'n' parameter of toy must be an int in the range [1, inf). Got 0 instead."),
        ({"n": 2.0}, "The 'n' parameter of toy must be an int in the range [1, inf). Got 2.0 instead."),
        ({"n": True}, "The 'n' parameter of toy must be an int in the range [1, inf). Got True instead."),
        ({"rate": 1.5}, "The 'rate' parameter of toy must be a float in the range [0.0, 1.0]. Got 1.5 instead."),
        ({"rate": float("nan")}, "The 'rate' parameter of toy must be a float in the range [0.0, 1.0]. Got nan instead."),
        ({"step": 0}, "The 'step' parameter of toy must be a float in the range (0.0, inf). Got 0 instead."),
        ({"mode": "c"}, "The 'mode' parameter of toy must be one of 'a', 'b'. Got 'c' instead."),
        ({"flag": "yes"}, "The 'flag' parameter of toy must be a bool. Got 'yes' instead."),
        ({"nn": 1, "m": 2}, "unknown toy parameter(s) ['m', 'nn']; known: n, rate, mode, step, flag"),
    ]:
        with pytest.raises(UserError) as err:
            check_params("toy", declared, raw)
        assert str(err.value) == message
