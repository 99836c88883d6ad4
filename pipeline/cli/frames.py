"""`mesodata frames`: the frames that did not make it into the benchmark, and why."""

from __future__ import annotations

from pathlib import Path

import click

from ..dropped import DROPPED_STATUSES, contact_sheet, counts_by_source, dropped_frames, write_csv
from ..report import format_table
from ..runner import Work
from .options import work_option

__all__ = ["frames"]


@click.command("frames")
@work_option("The work dir of a finished `mesodata build`.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(DROPPED_STATUSES),
              help="Only frames with this status (repeatable). Default: every dropped frame.")
@click.option("--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=30, show_default=True,
              help="Rows to print (and frames on the contact sheet).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write every matching row (not only --limit) to this CSV file.")
@click.option("--contact-sheet", "sheet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of the first --limit frames, captioned with status and reason.")
def frames(work, statuses, sources, limit, csv_path, sheet):
    """List the sampled frames that are not in the benchmark: video, frame index, status, reason.

    \b
    Statuses: no_face (Viola-Jones found none), rejected (dlib did not confirm it), truncated
    (the stream ended first), decode_error, duplicate (dedupe did not keep the crop).
    Example:
      mesodata frames --work WORK --status no_face --source dfdc --contact-sheet no_face.png
    """
    w = Work(work)
    table = dropped_frames(w, statuses or DROPPED_STATUSES, sources or None)
    click.echo(f"{len(table)} dropped frames in {work}" + (":" if len(table) else ""))
    if len(table):
        click.echo(format_table(counts_by_source(table), ["source", "status", "frames"]))
        click.echo("")
        click.echo(format_table(table.head(limit).to_dict("records"),
                                ["video_id", "frame_index", "status", "reason"]))
        if len(table) > limit:
            click.echo(f"... and {len(table) - limit} more (--limit, or --csv FILE for all)")
    if csv_path is not None:
        click.echo(f"wrote {write_csv(table, csv_path)} ({len(table)} rows)")
    if sheet is not None:
        click.echo(f"wrote {contact_sheet(w, table, sheet, limit=limit)}")
