"""Verifying a work dir: re-read every artifact a stage recorded and check it is what was written."""

from __future__ import annotations

import json
import logging

from dataclasses import dataclass

import pyarrow as pa

from . import schema, storage
from .errors import UserError
from .runner import DAMAGED, STATE_DIR, Lock, Work

log = logging.getLogger("mesodata")


def check_file(work: Work, rel: str, recorded: dict) -> str | None:
    """None when `rel` matches its record (bytes, sha256, rows, schema), else what is wrong."""
    path = work.path(rel)
    if not path.exists():
        return "missing"
    size = storage.size(path)
    if size != recorded["bytes"]:
        return f"size {size} bytes, recorded {recorded['bytes']}"
    if storage.sha256(path) != recorded["sha256"]:
        return "content hash differs from the one recorded"
    if path.suffix == ".parquet":
        try:
            table = storage.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            return f"unreadable Parquet ({exc})"
        if "rows" in recorded and table.num_rows != recorded["rows"]:
            return f"{table.num_rows} rows, recorded {recorded['rows']}"
        artifact = (table.schema.metadata or {}).get(b"mesodata.artifact")
        if artifact:
            expected = schema.load(artifact.decode())
            if not table.schema.remove_metadata().equals(expected.remove_metadata()):
                return f"schema differs from schemas/{artifact.decode()}.yaml"
    return None


def verify_work(work: Work) -> list[dict]:
    """One row per recorded output: stage, file, ok or the problem."""
    states = sorted(work.path(STATE_DIR).glob("*.json"))
    if not states:
        raise UserError(f"nothing to verify in {work.root}: no stage has finished there")
    rows = []
    for state_path in states:
        try:
            state = json.loads(state_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            rows.append({"stage": state_path.stem, "file": storage.relative(state_path, work.root),
                         "problem": "corrupt stage record"})
            continue
        for rel, recorded in state.get("outputs", {}).items():
            rows.append({"stage": state["stage"], "file": rel, "problem": check_file(work, rel, recorded)})
    return rows


# which command redoes a stage's files
REDONE_BY = {"manifest": "build", "faces": "build", "dedupe": "build", "split": "split", "shards": "split"}


def _record_findings(w: Work, bad: list[dict]) -> bool:
    """Remember the corrupt files for the next build/split; False when the work dir is read-only."""
    try:
        w.mark_damaged(bad)
    except OSError as exc:
        log.warning("cannot record the findings in %s (%s): the next build/split will not know of them",
                    w.path(DAMAGED), exc.strerror or exc)
        return False
    return True


@dataclass
class Findings:
    """What `verify_work_dir` found: every row, the bad ones, whether they were recorded for the next
    run, and (with repair) how many files were removed."""

    root: object  # the work dir's root (a Path, or a UPath on a store)
    rows: list[dict]
    bad: list[dict]
    recorded: bool
    removed: int | None = None

    @property
    def redo(self) -> str:
        """The commands that redo the bad files, in order: '`mesodata build` then `mesodata split`'."""
        commands = sorted({REDONE_BY.get(r["stage"], "build") for r in self.bad}, key=["build", "split"].index)
        return " then ".join(f"`mesodata {c}`" for c in commands)


def verify_work_dir(work: str, repair: bool = False) -> Findings:
    """Re-read every recorded artifact of `work` and remember the bad ones for the next build/split;
    with `repair`, also delete them now (under the lock: never beside a running build)."""
    w = Work(work)
    if not w.root.is_dir():
        raise UserError(f"work dir {w.root} does not exist")
    if not repair:
        return _findings(w, repair)
    if not w.remote:
        storage.check_writable(w.root, "work dir")
    with Lock(w):
        return _findings(w, repair)


def _findings(w: Work, repair: bool) -> Findings:
    rows = verify_work(w)
    bad = [r for r in rows if r["problem"]]
    found = Findings(w.root, rows, bad, _record_findings(w, bad))
    if bad and repair:
        found.removed = len(w.drop_damaged())
    return found
