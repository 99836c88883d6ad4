"""`mesodata export`: a trained run's networks as ONNX."""

from __future__ import annotations

from pathlib import Path

import click

from .options import run_folder_options

__all__ = ["export"]


@click.command("export")
@run_folder_options
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx"]))
def export(work: str | None, run: str, run_dir: Path | None, fmt: str) -> None:
    """Write each trained network as ONNX (outputs logit, hidden16, flat1024) and ONNX.md, which
    shows the two-step MesoInception-4 + SVM use.

    \b
    mesodata export --work WORK [--run NAME]
    mesodata export --run-dir WORK/detector/NAME
    """
    from mesodata.detector.rundir import find_run_folder

    folder = find_run_folder(work, run, run_dir)
    from mesodata.detector.export import export_run

    for path in export_run(folder, fmt):
        click.echo(str(path))
