"""`mesodata demo`: sample -> build -> split -> train, end to end, in one command."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from .options import workers_option

__all__ = ["demo"]

log = logging.getLogger("mesodata")


def _run(args: list[str]) -> None:
    """Run one mesodata verb as a user would type it."""
    from . import cli

    log.info("\n$ mesodata %s", " ".join(args))
    code = cli.main(args, standalone_mode=False)
    if isinstance(code, int) and code:
        raise click.ClickException(f"`mesodata {' '.join(args)}` exited with {code}")


@click.command()
@click.option("--out", default="mesodata-demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for the sample data (OUT/data) and the work dir (OUT/work).")
@click.option("--epochs", default=8, show_default=True, help="Training epochs per model.")
@workers_option("Worker processes for build and split.", default=2)
def demo(out: Path, epochs: int, workers: int) -> None:
    """Write the sample dataset, build it, split it, train and evaluate the detectors.

    Everything lands under OUT: rerunning reuses every finished stage, the training too (a run
    with the same options on the same shards is not retrained; another --epochs retrains it).
    """
    from ..demo import closing_lines, commands, folders

    started = time.monotonic()
    data, work = folders(out)
    if not (data / "FaceForensics++").is_dir():
        from ..sample import write_sample

        log.info("writing the sample dataset to %s", data)
        write_sample(data)
    for args in commands(data, work, epochs, workers):
        _run(args)
    click.echo("")
    for line in closing_lines(data, work, time.monotonic() - started):
        click.echo(line)
