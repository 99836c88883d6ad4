"""`mesodata verify`: re-read every artifact a stage recorded and check it is what was written."""

from __future__ import annotations

import json
import logging

import click
import pyarrow as pa

from . import schema, storage
from .errors import UserError
from .report import print_table
from .options import work_option
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


@click.command()
@work_option("The work dir whose artifacts to re-read.")
@click.option("--all", "show_all", is_flag=True, help="List every file, not only the bad ones.")
@click.option("--repair", is_flag=True,
              help="Delete the corrupt or missing files' leftovers now, so nothing reads them; the "
                   "next `mesodata build` / `split` (same options) redoes exactly those units.")
def verify(work: str, show_all: bool, repair: bool) -> None:
    """Re-read every artifact in WORK: schemas, row counts and content hashes recorded by the stages.

    Exits 1 when anything is corrupt or missing (0 with --repair once it removed them). The next `mesodata build` / `split` redoes exactly
    the files found bad (their stages are stale until then); --repair also deletes them at once.
    """
    w = Work(work)
    if not w.root.is_dir():
        raise UserError(f"work dir {w.root} does not exist")
    if repair:
        if not w.remote:
            storage.check_writable(w.root, "work dir")
        with Lock(w):  # never delete beside a running build
            _verify(w, show_all, repair)
    else:
        _verify(w, show_all, repair)


def _verify(w: Work, show_all: bool, repair: bool) -> None:
    rows = verify_work(w)
    bad = [r for r in rows if r["problem"]]
    shown = rows if show_all else bad
    if shown:
        print_table("Artifacts", [{**r, "problem": r["problem"] or "ok"} for r in shown], ["stage", "file", "problem"])
    click.echo(f"{len(rows) - len(bad)} of {len(rows)} artifacts verified" + (f"; {len(bad)} bad" if bad else ""))
    recorded = _record_findings(w, bad)
    if not bad:
        return
    commands = sorted({REDONE_BY.get(r["stage"], "build") for r in bad}, key=["build", "split"].index)
    redo = " then ".join(f"`mesodata {c}`" for c in commands)
    if repair:
        dropped = w.drop_damaged()
        click.echo(f"repair: removed {len(dropped)} corrupt file(s); run {redo} with the same options to "
                   f"redo exactly those units (`mesodata status --work {w.root}` shows the stages to redo)")
        return  # done what was asked: exit 0
    if recorded:
        click.echo(f"the next {redo} redoes exactly these; `mesodata verify --repair` removes them now")
    raise SystemExit(1)
