"""Options that several commands share, defined once so each name has one meaning everywhere:
`--work` (the work dir), `--workers` (parallel processes for units), `--backend` and `--scheduler`."""

from __future__ import annotations

import os

import click


def default_workers() -> int:
    """Every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def work_option(help: str = "Work dir for every artifact: a folder or an fsspec URL (s3://bucket/prefix)."):
    return click.option("--work", required=True, metavar="PATH|URL", help=help)


def workers_option(help: str = "Parallel units (processes)."):
    return click.option("--workers", type=click.IntRange(min=1), default=default_workers, show_default="all cores",
                        help=help)


def backend_options(fn):
    """--backend local|dask and --scheduler ADDRESS, for commands that run units."""
    fn = click.option("--scheduler", metavar="ADDRESS",
                      help="With --backend dask: an existing scheduler (tcp://host:8786); default: a local cluster.")(fn)
    return click.option("--backend", type=click.Choice(["local", "dask"]), default="local", show_default=True,
                        help="local: joblib processes; dask: a Dask cluster (see --scheduler).")(fn)
