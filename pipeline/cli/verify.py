"""`mesodata verify`: re-read every artifact a stage recorded and check it is what was written."""

from __future__ import annotations

import click

from ..report import print_table
from ..verify import verify_work_dir
from .options import work_option

__all__ = ["verify"]


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
    found = verify_work_dir(work, repair)
    rows, bad = found.rows, found.bad
    shown = rows if show_all else bad
    if shown:
        print_table("Artifacts", [{**r, "problem": r["problem"] or "ok"} for r in shown], ["stage", "file", "problem"])
    click.echo(f"{len(rows) - len(bad)} of {len(rows)} artifacts verified" + (f"; {len(bad)} bad" if bad else ""))
    if not bad:
        return
    if found.removed is not None:
        click.echo(f"repair: removed {found.removed} corrupt file(s); run {found.redo} with the same options to "
                   f"redo exactly those units (`mesodata status --work {found.root}` shows the stages to redo)")
        return  # done what was asked: exit 0
    if found.recorded:
        click.echo(f"the next {found.redo} redoes exactly these; `mesodata verify --repair` removes them now")
    raise SystemExit(1)
