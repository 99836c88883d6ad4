"""`mesodata fetch`: the command line over pipeline.fetch."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..fetch import COMPRESSIONS, FF_METHODS, fetch as run_fetch
from ..sources import ADAPTERS
from ..sources.names import parse_sources

__all__ = ["fetch"]


@click.command("fetch")
@click.option("--data-root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the datasets go, in the layout `mesodata build` reads.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Work dir for reports/fetch.json (default: DATA_ROOT/.mesodata).")
@click.option("--ff-server", metavar="URL", default=None,
              help="FaceForensics++: the server URL you received with its terms of use.")
@click.option("--accept-terms", is_flag=True,
              help="State that you have read and agree to the FaceForensics++ terms of use.")
@click.option("--ff-methods", default="all", show_default=True, metavar="LIST",
              help=f"Comma list of: all, {', '.join(FF_METHODS)}.")
@click.option("--compression", type=click.Choice(COMPRESSIONS), default="c23",
              show_default=True, help="FF++ quality: raw (c0), c23 or c40.")
@click.option("--masks/--no-masks", default=False, show_default=True,
              help="Also fetch the manipulation masks of the fake FF++ methods.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only the first N videos of each FF++ method, for a first look.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CSV or Parquet with url, path (relative to the data root), optional size "
                   "and sha256: Celeb-DF, DFDC or any links you hold.")
@click.option("--connections", type=click.IntRange(min=1, max=64), default=4, show_default=True,
              help="Parallel downloads.")
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="Tries after a timeout, reset or 5xx without progress, per file.")
@click.option("--retry-wait", type=click.FloatRange(min=0), default=1.0, show_default=True,
              metavar="SECONDS", help="First pause before a retry; doubles each time.")
@click.option("--sources", default=None, metavar="LIST",
              help=f"Comma-separated sources to fetch, as in `build` ({', '.join(ADAPTERS)}): the FF++ "
                   "server for ff++, the manifest rows under each source's folder. Default: all.")
@click.option("--extract/--no-extract", default=True, show_default=True,
              help="Unpack downloaded archives (zip, tar, tar.gz) beside themselves, once.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              metavar="SECONDS", help="Connect/read timeout of each request.")
def fetch(data_root: Path, work: Path | None, ff_server: str | None,
          accept_terms: bool, ff_methods: str, compression: str, masks: bool,
          limit: int | None, manifest: Path | None, connections: int, retries: int,
          retry_wait: float, timeout: float, sources: str | None, extract: bool) -> None:
    """Download the datasets you are entitled to, resumably and verified.

    \b
    mesodata knows no dataset server: it fetches only from what you hold.
      FaceForensics++  --ff-server URL --accept-terms (the URL from the owners' e-mail)
      anything else    --manifest FILE with columns url,path[,size,sha256]
    Files land in DATA_ROOT in the layout `mesodata build` reads, e.g.
    FaceForensics++/original_sequences/youtube/c23/videos/000.mp4. Interrupted downloads
    continue from their .part files; complete files are not fetched again. Exit code 1 when
    some files failed (see WORK/reports/fetch.json), 2 for bad input.

    \b
    Example:
      mesodata fetch --data-root DATA --ff-server URL --accept-terms \\
          --ff-methods original,Deepfakes --limit 10
    """
    report = run_fetch(data_root, work, ff_server=ff_server, ff_methods=ff_methods,
                       compression=compression, masks=masks, limit=limit,
                       accept_terms=accept_terms, manifest=manifest, connections=connections,
                       retries=retries, retry_wait=retry_wait, timeout=timeout, extract=extract,
                       sources=parse_sources(sources) if sources is not None else None)
    click.echo(report.summary(), err=True)
    if report.failed:
        # sys.exit, not ctx.exit: cli.main runs click with standalone_mode=False, which turns
        # ctx.exit's code into an ignored return value.
        sys.exit(1)
