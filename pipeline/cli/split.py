"""`mesodata split`: the leak-free stratified split, its leakage audit, then the Parquet shards."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..build import split_work
from ..errors import UserError
from .options import backend_options, work_option, workers_option

__all__ = ["split", "parse_size", "parse_augment"]

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024 ** 2, "MB": 1024 ** 2, "MIB": 1024 ** 2,
          "G": 1024 ** 3, "GB": 1024 ** 3, "GIB": 1024 ** 3}


def parse_size(text: str) -> int:
    """'256MB' -> 268435456 (KB, MB, GB are powers of 1024, as KiB, MiB, GiB); a plain number is bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise UserError(f"--shard-size must be a size such as 256MB, 1GB or 1048576; got {text!r}")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size < 1:
        raise UserError(f"--shard-size must be at least 1 byte; got {text!r}")
    return size


def parse_augment(text: str) -> str:
    if text in ("paper", "none"):
        return text
    if not Path(text).is_file():
        raise UserError(f"--augment must be paper, none or a preset file; {text!r} is neither")
    return str(Path(text).resolve())


@click.command()
@work_option("Work dir of a finished `mesodata build` (a folder or an fsspec URL).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the group assignment and of the shards' order and augmentations.")
@click.option("--ratios", default="70,20,10", show_default=True,
              help="Train,val,test shares of each stratum's kept frames, summing to 100.")
@click.option("--protocol", type=click.Choice(["default", "official"]), default="default", show_default=True,
              help="default: leak-free stratified groups. official: each source's own split "
                   "(val carved from train where none), with its leaks reported.")
@click.option("--join-duplicates", "join_duplicates", type=click.Choice(["near", "exact", "none"]), default="near",
              show_default=True,
              help="Which cross-video duplicates join groups: near (every duplicate cluster), exact (only "
                   "byte/pixel-identical crops) or none (nothing; duplicates crossing splits are reported "
                   "as leaks in reports/split.json).")
@workers_option("Parallel units (processes) for the shards.")
@click.option("--shard-size", default="256MB", show_default=True, help="Target bytes per shard file.")
@click.option("--augment", default="paper", show_default=True,
              help="Training augmentation: paper, none, or a preset file (YAML/JSON).")
@click.option("--perturb-test", is_flag=True, help="Also write a test-perturbed split.")
@click.option("--augment-storage", "augment_storage", type=click.Choice(["materialized", "on-read"]),
              default="materialized", show_default=True,
              help="materialized: every train copy stored as a PNG (~9x the originals' disk with the paper "
                   "preset; every Parquet reader sees every image). on-read: train copies stored as their "
                   "exact parameters with no image (~1x the disk); mesodata's reader makes them, identical "
                   "to materialized copies; plain readers see null images for them.")
@backend_options
def split(work, seed, ratios, protocol, join_duplicates, workers, shard_size, augment, perturb_test, augment_storage,
          backend, scheduler):
    """Assign whole groups to train/val/test, audit the split for leaks, then write the shards.

    \b
    Groups are the manifest's (FF++ pairs and YouTube ids, Celeb-DF identities, DFDC families)
    joined with every cross-video duplicate cluster found by dedupe, so no clip, person or family
    is in two splits. Each stratum (source x label x method) is split as close to --ratios as its
    groups allow; reports/split.json says how close, and lists every leak. When the groups leave val
    or test empty (or a source without val or test rows), the split stops with exit 2 and writes
    nothing; the message says which group is too large and what to try.
    """
    from ..stages.split import parse_ratios

    params = {"seed": seed, "ratios": list(parse_ratios(ratios)), "protocol": protocol,
              "join_duplicates": join_duplicates}
    shards_params = {"shard_size": parse_size(shard_size), "augment": parse_augment(augment),
                     "perturb_test": bool(perturb_test), "seed": seed, "augment_storage": augment_storage}
    split_work(work, params, shards_params, workers=workers, backend=backend, scheduler=scheduler)
