"""`mesodata train-detector`: Meso-4, MesoInception-4 and the SVM head on a work dir's shards."""

from __future__ import annotations

import click

from .options import run_name_option, work_option

__all__ = ["train_detector"]


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


class _Processes(click.ParamType):
    """`auto` or a count >= 1."""

    name = "auto|N"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or str(value).strip().lower() == "auto":
            return value if isinstance(value, int) else "auto"
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            self.fail(f"{value!r} is neither 'auto' nor a count >= 1", param, ctx)
        return n


@click.command("train-detector")
@work_option("Local work dir holding shards/<split>/part-*.parquet (from `mesodata split`).")
@run_name_option("Run name; outputs go to WORK/detector/<run>/.")
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
@click.option("--loader-workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="DataLoader worker processes decoding images (0: decode in the training process).")
@click.option("--processes", default="auto", show_default=True, type=_Processes(),
              help="CPU data parallelism: N single-thread training processes sharing each batch (about "
                   "1.3x faster with 2 on a 2-core machine). auto: one per core (>= 8 images of a batch "
                   "each) once a net trains on >= 4000 images, else 1; 1 on CUDA. The choice is in "
                   "metrics.json and report.md.")
@click.option("--checkpoint-every", default=500, show_default=True, type=click.IntRange(min=1),
              metavar="N", help="Iterations between training checkpoints (also one at each epoch end). "
                                "Rerun after a kill with the same options, training resumes from the last.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing run of this name trained with other options or shards (the old "
                   "folder is replaced only when the new run is complete).")
def train_detector(work: str, run: str, models: str, epochs: int, batch_size: int, seed: int,
                   seeds: str | None, loss: str, lr_schedule: str, balance: str, svm_train: str,
                   device: str, svm_features: str, train_sources: str | None,
                   test_sources: str | None, loader_workers: int, processes: int | str, checkpoint_every: int,
                   overwrite: bool) -> None:
    """Train Meso-4 and MesoInception-4 as in the paper, fit the RBF-SVM head, pick everything on
    val, evaluate once on test and write weights, metrics.json, report.md and plots.

    The run folder appears when the run is complete. Rerun with the same options on the same
    shards, it is reused (not retrained); an existing run with other options is refused unless
    --overwrite. Rerun after an interrupted training with the same options, it resumes from the
    last checkpoint."""
    from mesodata.detector.rundir import run_folder, training_work

    work_dir = training_work(work, run)  # before torch loads and before any training
    from mesodata.detector.run import parse_models, parse_seeds, train_seeds
    from mesodata.detector.train import TrainConfig

    seed_list = parse_seeds(seeds) if seeds is not None else [seed]
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed_list[0], device=device,
                      workers=loader_workers, processes=processes, loss=loss, lr_schedule=lr_schedule,
                      balance=balance)
    metrics = train_seeds(work_dir, run, seed_list, parse_models(models), cfg, svm_features=svm_features,
                          train_sources=_csv(train_sources), test_sources=_csv(test_sources),
                          svm_train=svm_train, overwrite=overwrite, checkpoint_every=checkpoint_every)
    click.echo(f"\nTest results ({run_folder(work_dir, run)}):\n")
    click.echo(metrics["table"])
    for w in metrics.get("warnings", []):
        click.echo(f"warning: {w}")
