"""Options that several commands share, defined once so each name has one meaning everywhere.

`--work`     the work dir (a folder or an fsspec URL)
`--workers`  parallel worker processes for a stage's units (never DataLoader workers: those are
             `train-detector --loader-workers`)
`--backend`, `--scheduler`  where the units run (joblib processes or a Dask cluster)
`--run`      a detector run's name: its folder is WORK/detector/NAME; `--run-dir PATH` names a run
             folder anywhere instead
"""

from __future__ import annotations

import os
from pathlib import Path

import click

DEFAULT_RUN = "default"


def default_workers() -> int:
    """Every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def work_option(help: str = "Work dir for every artifact: a folder or an fsspec URL (s3://bucket/prefix).",
                required: bool = True):
    return click.option("--work", required=required, metavar="PATH|URL", help=help)


def workers_option(help: str = "Parallel units (worker processes).", default=None):
    """--workers N: worker processes; all cores unless the command chooses another `default`."""
    if default is None:
        return click.option("--workers", type=click.IntRange(min=1), default=default_workers,
                            show_default="all cores", help=help)
    return click.option("--workers", type=click.IntRange(min=1), default=default, show_default=True, help=help)


def backend_options(fn):
    """--backend local|dask and --scheduler ADDRESS, for commands that run units."""
    fn = click.option("--scheduler", metavar="ADDRESS",
                      help="With --backend dask: an existing scheduler (tcp://host:8786); default: a local cluster.")(fn)
    return click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                        help="local: joblib processes; dask: a Dask cluster (see --scheduler).")(fn)


def run_name_option(help: str = "Run name; its folder is WORK/detector/<run>/."):
    return click.option("--run", default=DEFAULT_RUN, show_default=True, metavar="NAME", help=help)


def run_folder_options(fn):
    """--work WORK [--run NAME] or --run-dir PATH: which finished run a command reads."""
    fn = click.option("--run-dir", "run_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
                      help="A run folder anywhere (instead of --work/--run), e.g. a copied run or "
                           "RUN/seed-<s>/ of a several-seed run.")(fn)
    fn = run_name_option("Run name, as given to train-detector: its folder is WORK/detector/<run>/.")(fn)
    return work_option("Work dir the run was trained in (with --run).", required=False)(fn)
