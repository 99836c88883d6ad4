"""`mesodata predict`: score videos with a trained run."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import run_folder_options

__all__ = ["predict"]


@click.command("predict")
@click.argument("path", type=click.Path(path_type=Path))
@run_folder_options
@click.option("--model", default=None, type=click.Choice(["mesoinception4+svm", "mesoinception4", "meso4"]),
              help="Default: MesoInception-4 + SVM when the run has one.")
@click.option("--frames", default=10, show_default=True, type=click.IntRange(min=1),
              help="Frames sampled per video.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def predict(path: Path, work: str | None, run: str, run_dir: Path | None, model: str | None, frames: int,
            as_json: bool) -> None:
    """Score a video or a folder of videos: P(fake) per video = mean over its face crops.

    \b
    mesodata predict VIDEO_OR_FOLDER --work WORK [--run NAME]
    mesodata predict VIDEO_OR_FOLDER --run-dir WORK/detector/NAME
    """
    from mesodata.detector.rundir import find_run_folder

    folder = find_run_folder(work, run, run_dir)
    from mesodata.detector.predict import find_videos, predict_videos

    name, preds, timing = predict_videos(find_videos(path), folder, model, {"frames": frames})
    if as_json:
        click.echo(json.dumps({"model": name, "timing": timing,
                               "videos": [p.__dict__ for p in preds]}, indent=2))
        return
    click.echo(f"model {name}; score = mean P(fake) over face crops; >= 0.5 is fake")
    for p in preds:
        click.echo(f"{p.verdict:>16}  {p.frames_scored}/{p.frames_sampled} frames  {p.video}")
    click.echo(f"{timing['videos_per_s']:.2f} videos/s, {timing['frames_per_s']:.1f} frames/s")
