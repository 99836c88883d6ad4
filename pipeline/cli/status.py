"""`mesodata status`: each stage of a work dir, and its detector runs."""

from __future__ import annotations

import click

from ..report import print_table
from ..runner import Work
from ..status import detector_runs, stage_rows
from .options import work_option

__all__ = ["status"]


@click.command()
@work_option("The work dir to describe.")
def status(work):
    """Each stage of WORK: done, stale (inputs or parameters changed) or missing, with counts."""
    w = Work(work)
    print_table(f"Stages of {work}", stage_rows(w), ["stage", "status", "finished", "counts"])
    runs = detector_runs(w.root)
    if runs:
        print_table(f"Detector runs in {w.path('detector')}", runs,
                    ["run", "models", "model", "frame AUC", "video AUC"])
