"""`mesodata demo`: the whole job on the embedded sample, end to end."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .sample import write_sample

log = logging.getLogger("mesodata")


def _run(args: list[str]) -> None:
    """Run one mesodata verb as a user would type it."""
    from .cli import cli

    log.info("\n$ mesodata %s", " ".join(args))
    code = cli.main(args, standalone_mode=False)
    if isinstance(code, int) and code:
        raise click.ClickException(f"`mesodata {' '.join(args)}` exited with {code}")


@click.command()
@click.option("--out", default="mesodata-demo", show_default=True, type=click.Path(path_type=Path),
              help="Folder for the sample data (OUT/data) and the work dir (OUT/work).")
@click.option("--epochs", default=8, show_default=True, help="Training epochs per model.")
@click.option("--workers", default=2, show_default=True, help="Parallel units.")
def demo(out: Path, epochs: int, workers: int) -> None:
    """Write the sample dataset, build it, split it, train and evaluate the detectors.

    Everything lands under OUT: rerunning reuses every finished stage, the training too (a run
    with the same options on the same shards is not retrained; another --epochs retrains it).
    """
    data, work = out / "data", out / "work"
    if not (data / "FaceForensics++").is_dir():
        log.info("writing the sample dataset to %s", data)
        write_sample(data)
    _run(["build", "--sources", "celebdf,dfdc,ff++", "--data-root", str(data), "--work", str(work),
          "--frames", "16", "--within-video", "keep", "--workers", str(workers)])
    from .cli import COMMANDS, cli

    for verb, args in (("split", ["--seed", "0", "--work", str(work), "--workers", str(workers),
                                  "--ratios", "60,20,20", "--augment", "none"]),
                       ("train-detector", ["--work", str(work), "--epochs", str(epochs), "--overwrite"])):
        if cli.get_command(None, verb) is None:
            log.info("`%s` is not available in this version (%s); the demo stops here", verb, COMMANDS[verb])
            return
        _run([verb, *args])
