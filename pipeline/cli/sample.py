"""`mesodata sample DIR`: the embedded sample dataset in the three real layouts."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["sample"]


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
def sample(directory: Path) -> None:
    """Write a small dataset in the layouts of FaceForensics++, Celeb-DF v2 and DFDC to DIRECTORY.

    Built from real face footage (public domain) with face-swap fakes, and a few faults: a missing
    file, an empty file, a truncated file, a non-video, an unlisted file, a video with no face, and
    one clip present in two datasets.
    """
    from ..sample import write_sample

    counts = write_sample(directory)
    click.echo(f"sample written to {directory}: " + ", ".join(f"{s} {n} files" for s, n in counts.items()))
