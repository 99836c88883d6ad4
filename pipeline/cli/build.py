"""`mesodata build`: manifest -> frames and faces -> dedupe for the chosen sources."""

from __future__ import annotations

from pathlib import Path

import click

from ..build import build_work, fetch_first
from ..sources import ADAPTERS
from ..sources.names import parse_overrides, parse_sources
from .options import backend_options, work_option, workers_option

__all__ = ["build"]


@click.command()
@click.option("--sources", default=",".join(ADAPTERS), show_default=True,
              help=f"Comma-separated sources: {', '.join(ADAPTERS)} (manifests/*.yaml, and $MESODATA_SOURCES).")
@click.option("--data-root", required=True, metavar="PATH|URL",
              help="Folder holding Celeb-DF-v2/, DFDC/, FaceForensics++/ as downloaded; or an fsspec "
                   "URL such as s3://bucket/prefix (see docs/cluster.md).")
@work_option()
@click.option("--source-root", "source_root", multiple=True, metavar="NAME=PATH",
              help="Use PATH as the folder of source NAME (repeatable).")
@click.option("--compression", default="c23", show_default=True, type=click.Choice(["raw", "c23", "c40"]),
              help="FF++ compression level to read.")
@click.option("--ff-splits", type=click.Path(path_type=Path, file_okay=False),
              help="Folder with FF++'s train/val/test.json (default: looked for in the FF++ root).")
@click.option("--frames", default=32, show_default=True, help="Frames per video, evenly spaced.")
@click.option("--every-seconds", type=float, help="Sample one frame every S seconds instead.")
@click.option("--stride", type=int, help="Sample every K-th frame instead.")
@click.option("--margin", default=1.3, show_default=True, help="Crop side as a multiple of the face box side.")
@click.option("--verify", type=click.Choice(["dlib", "none"]), default="dlib", show_default=True,
              help="Check each Viola-Jones face with dlib's HOG detector.")
@click.option("--cascade", default="haarcascade_frontalface_default.xml", show_default=True,
              help="OpenCV Haar cascade: a name in cv2.data.haarcascades or a path.")
@click.option("--image-format", type=click.Choice(["png", "jpeg"]), default="png", show_default=True)
@click.option("--quality", default=95, show_default=True, help="JPEG quality (with --image-format jpeg).")
@click.option("--decode-timeout", default=300.0, show_default=True,
              help="Seconds before a video's decoding is abandoned and recorded as decode_error.")
@click.option("--min-yield", default=0.5, show_default=True,
              help="Report videos whose face yield (faces / frames sampled) is below this.")
@click.option("--radius", default=None, type=int,
              help="Hamming radius of the 64-bit pHash for near-duplicates (default: the stage's).")
@click.option("--within-video", "within_video", type=click.Choice(["keep", "drop"]), default=None,
              help="Near-duplicate crops inside one video: keep them as rows, or drop all but the first of "
                   "each cluster (default: keep). Cross-video duplicates join groups either way.")
@workers_option()
@backend_options
@click.option("--fetch", "do_fetch", is_flag=True,
              help="Download first, as `mesodata fetch` does, with --ff-server/--fetch-manifest.")
@click.option("--ff-server", metavar="URL", help="With --fetch: the FF++ server from your terms of use.")
@click.option("--accept-terms", is_flag=True, help="With --fetch: you accept the FF++ terms of use.")
@click.option("--fetch-manifest", type=click.Path(path_type=Path, dir_okay=False),
              help="With --fetch: your download manifest (CSV/Parquet: url, path, size, sha256).")
def build(sources, data_root, work, source_root, compression, ff_splits, frames, every_seconds, stride,
          margin, verify, cascade, image_format, quality, decode_timeout, min_yield, radius, within_video, workers,
          backend, scheduler, do_fetch, ff_server, accept_terms, fetch_manifest):
    """Manifest of every video -> sampled frames -> 256x256 face crops -> dedupe.

    Each stage is cached in WORK: rerunning does only what is missing or stale, and a killed build
    resumes where it stopped.
    """
    if do_fetch:
        fetch_first(data_root, work, ff_server=ff_server, compression=compression, accept_terms=accept_terms,
                    manifest=fetch_manifest)
        data_root, work = Path(data_root), Path(work)
    faces_params = {"frames": frames, "every_seconds": every_seconds, "stride": stride, "margin": margin,
                    "verify": verify, "cascade": cascade, "image_format": image_format, "quality": quality,
                    "decode_timeout": decode_timeout, "min_yield": min_yield}
    dedupe_params = {k: v for k, v in (("radius", radius), ("within_video", within_video)) if v is not None}
    build_work(work, data_root, parse_sources(sources), parse_overrides(source_root), workers=workers,
               backend=backend, scheduler=scheduler, compression=compression, ff_splits=ff_splits,
               faces_params=faces_params, dedupe_params=dedupe_params)
