"""`mesodata verify`: re-read every artifact a stage recorded and check it is what was written."""

from __future__ import annotations

import json

import click
import pyarrow as pa

from . import schema, storage
from .errors import UserError
from .report import print_table
from .runner import STATE_DIR, Work


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


@click.command()
@click.option("--work", required=True, metavar="PATH|URL")
@click.option("--all", "show_all", is_flag=True, help="List every file, not only the bad ones.")
def verify(work: str, show_all: bool) -> None:
    """Re-read every artifact in WORK: schemas, row counts and content hashes recorded by the stages.

    Exits 1 when anything is corrupt or missing.
    """
    w = Work(work)
    if not w.root.is_dir():
        raise UserError(f"work dir {w.root} does not exist")
    rows = verify_work(w)
    bad = [r for r in rows if r["problem"]]
    shown = rows if show_all else bad
    if shown:
        print_table("Artifacts", [{**r, "problem": r["problem"] or "ok"} for r in shown], ["stage", "file", "problem"])
    click.echo(f"{len(rows) - len(bad)} of {len(rows)} artifacts verified" + (f"; {len(bad)} bad" if bad else ""))
    if bad:
        raise SystemExit(1)
