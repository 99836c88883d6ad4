"""Click commands of the detector: `train-detector`, `predict`, `export`.

Registered lazily by pipeline/cli.py (COMMANDS), so torch loads only when one of them runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from mesodata.pipeline import storage
from mesodata.pipeline.errors import UserError

__all__ = ["train_detector", "predict", "export"]


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@click.command("train-detector")
@click.option("--work", "work", required=True, metavar="PATH",
              help="Local work dir holding shards/<split>/part-*.parquet (from `mesodata split`).")
@click.option("--run", default="default", show_default=True,
              help="Run name; outputs go to WORK/detector/<run>/.")
@click.option("--models", default="meso4,mesoinception4,mesoinception4+svm", show_default=True,
              help="Comma list of meso4, mesoinception4, mesoinception4+svm (the SVM head sits on "
                   "MesoInception-4, which is trained for it if not listed).")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of a one-seed run.")
@click.option("--seeds", default=None, metavar="LIST",
              help="Comma list of seeds (e.g. 0,1,2): one run per seed in RUN/seed-<s>/, and RUN/report.md "
                   "with mean ± std over seeds. Overrides --seed.")
@click.option("--loss", default="bce", show_default=True, type=click.Choice(["bce", "mse"]),
              help="bce: cross-entropy on the logit; mse: the paper's 1/2 (sigmoid - y)^2.")
@click.option("--lr-schedule", default="dynamic", show_default=True, type=click.Choice(["dynamic", "paper"]),
              help="lr 1e-3 /10 down to 1e-6. dynamic: steps spread so the floor is reached at 90 % of the "
                   "run; paper: every 1000 iterations.")
@click.option("--balance", default="weights", show_default=True, type=click.Choice(["none", "weights", "sampler"]),
              help="Class balance in training: none, loss weights n/(2 n_c), or a resampled stream.")
@click.option("--svm-train", default="originals", show_default=True, type=click.Choice(["originals", "all"]),
              help="Train rows the SVM head is fitted on: the originals only, or every augmented copy too.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="auto = CUDA when available (mixed precision, pinned memory), else CPU.")
@click.option("--svm-features", default="hidden16", show_default=True,
              type=click.Choice(["hidden16", "flat1024"]),
              help="SVM input: the 16-d hidden layer after LeakyReLU, or the 1024-d flattened trunk.")
@click.option("--train-sources", default=None, help="Comma list of sources for train/val (default all).")
@click.option("--test-sources", default=None, help="Comma list of sources for test (default all); "
                                                   "differs from --train-sources for cross-dataset runs.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="DataLoader worker processes decoding images.")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(min=1),
              help="CPU data parallelism: N single-thread training processes sharing each batch "
                   "(about 1.3x faster end to end with 2 on a 2-core machine).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing run of this name trained with other options or shards (the old "
                   "folder is replaced only when the new run is complete).")
def train_detector(work: str, run: str, models: str, epochs: int, batch_size: int, seed: int,
                   seeds: str | None, loss: str, lr_schedule: str, balance: str, svm_train: str,
                   device: str, svm_features: str, train_sources: str | None,
                   test_sources: str | None, workers: int, processes: int, overwrite: bool) -> None:
    """Train Meso-4 and MesoInception-4 as in the paper, fit the RBF-SVM head, pick everything on
    val, evaluate once on test and write weights, metrics.json, report.md and plots.

    The run folder appears when the run is complete. Rerun with the same options on the same
    shards, it is reused (not retrained); an existing run with other options is refused unless
    --overwrite."""
    from .run import parse_models, parse_seeds, train_seeds
    from .train import TrainConfig

    if "://" in work and not work.startswith("file://"):
        raise UserError(f"train-detector reads its shards from a local work dir, not {work}: copy "
                        "WORK/shards/ to a local folder first (e.g. `aws s3 sync URL/shards DIR/shards`)")
    work = Path(work.removeprefix("file://"))
    if not work.is_dir():
        raise UserError(f"no work dir at {work}")
    storage.check_writable(work / "detector" / run, "run dir")  # now, not after the first epoch
    seed_list = parse_seeds(seeds) if seeds is not None else [seed]
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed_list[0], device=device, workers=workers,
                      processes=processes, loss=loss, lr_schedule=lr_schedule, balance=balance)
    metrics = train_seeds(work, run, seed_list, parse_models(models), cfg, svm_features=svm_features,
                          train_sources=_csv(train_sources), test_sources=_csv(test_sources),
                          svm_train=svm_train, overwrite=overwrite)
    click.echo(f"\nTest results ({work / 'detector' / run}):\n")
    click.echo(metrics["table"])
    for w in metrics.get("warnings", []):
        click.echo(f"warning: {w}")


@click.command("predict")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path),
              help="A run folder, WORK/detector/<run>/.")
@click.option("--model", default=None, type=click.Choice(["mesoinception4+svm", "mesoinception4", "meso4"]),
              help="Default: MesoInception-4 + SVM when the run has one.")
@click.option("--frames", default=10, show_default=True, type=click.IntRange(min=1),
              help="Frames sampled per video.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def predict(path: Path, run_dir: Path, model: str | None, frames: int, as_json: bool) -> None:
    """Score a video or a folder of videos: P(fake) per video = mean over its face crops."""
    from .predict import find_videos, predict_videos

    name, preds, timing = predict_videos(find_videos(path), run_dir, model, {"frames": frames})
    if as_json:
        click.echo(json.dumps({"model": name, "timing": timing,
                               "videos": [p.__dict__ for p in preds]}, indent=2))
        return
    click.echo(f"model {name}; score = mean P(fake) over face crops; >= 0.5 is fake")
    for p in preds:
        click.echo(f"{p.verdict:>16}  {p.frames_scored}/{p.frames_sampled} frames  {p.video}")
    click.echo(f"{timing['videos_per_s']:.2f} videos/s, {timing['frames_per_s']:.1f} frames/s")


@click.command("export")
@click.option("--run", "run_dir", required=True, type=click.Path(path_type=Path),
              help="A run folder, WORK/detector/<run>/.")
@click.option("--format", "fmt", default="onnx", show_default=True, type=click.Choice(["onnx"]))
def export(run_dir: Path, fmt: str) -> None:
    """Write each trained network as ONNX (outputs logit, hidden16, flat1024) and ONNX.md, which
    shows the two-step MesoInception-4 + SVM use."""
    from .export import export_run

    for path in export_run(run_dir, fmt):
        click.echo(str(path))
