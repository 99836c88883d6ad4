"""Training with 1 process vs N data-parallel processes, side by side in one run (issue 18 item 7):
what `train-detector --processes auto` rests on. Not run by CI.

    python tests/benchmarks/bench_train_processes.py [--model mesoinception4] [--rounds 3] [--steps 10]

1. The training step alone (MesoInception-4, batch 32, real 256x256 face crops in memory): one
   process with PyTorch's threads vs N single-thread processes (DDP over gloo), alternated
   `--rounds` times; medians and their ratio.
2. End to end through `train_model` on sample shards (decoding included): img/s of the training
   loop, and the seconds a run with N processes spends outside it beyond the one-process run
   (spawning, importing, the process group), from which the break-even size of a net's training
   (epochs x rows) follows; `choose_processes` declines processes below MIN_PARALLEL_IMAGES.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.fixtures
from bench_train import measure, measure_ddp  # noqa: E402

from mesodata.detector.data import RowFilter, ShardDataset, shard_files  # noqa: E402
from mesodata.detector.train import (MIN_PARALLEL_IMAGES, TrainConfig, available_cores,  # noqa: E402
                                     choose_processes, cpu_has_native_bf16, train_model)
from tests.fixtures.samples import write_sample_shards  # noqa: E402


def step_rates(model: str, steps: int, rounds: int, world: int) -> tuple[list[float], list[float]]:
    """img/s of the training step, one process vs `world` processes, alternated per round."""
    bf16 = cpu_has_native_bf16()
    one, many = [], []
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)  # alternate, so a load change hits both
        for which in order:
            if which == 0:
                one.append(measure(model, 32, steps, channels_last=True, bf16=bf16))
            else:
                many.append(measure_ddp(model, 32, steps, bf16, world=world))
            print(f"  round {r + 1}: {'1 process' if which == 0 else f'{world} processes'} "
                  f"{(one if which == 0 else many)[-1]:.1f} img/s", flush=True)
    return one, many


def end_to_end(model: str, processes: int, train: ShardDataset, val: ShardDataset) -> dict:
    cfg = TrainConfig(model=model, epochs=1, batch_size=32, seed=0, workers=2, processes=processes)
    t0 = time.perf_counter()
    res = train_model(cfg, train, val)
    wall = time.perf_counter() - t0
    row = res.history[-1]
    return {"wall": wall, "train_s": row["seconds"], "rate": row["images_per_s"], "outside": wall - row["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mesoinception4")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--processes", type=int, default=2, help="the N compared with one process")
    ap.add_argument("--videos", type=int, default=24, help="train videos per class in the end-to-end shards")
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {available_cores()} cores, {torch.get_num_threads()} threads, "
          f"native bf16 {cpu_has_native_bf16()}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")

    print(f"\n1. training step, {args.model}, batch 32, {args.steps} steps, {args.rounds} rounds")
    one, many = step_rates(args.model, args.steps, args.rounds, args.processes)
    m1, mn = statistics.median(one), statistics.median(many)
    print(f"\n| training step | median img/s | all rounds |\n|---|---|---|\n"
          f"| 1 process, {torch.get_num_threads()} threads | {m1:.1f} | {', '.join(f'{v:.1f}' for v in one)} |\n"
          f"| {args.processes} processes x 1 thread (DDP) | {mn:.1f} | {', '.join(f'{v:.1f}' for v in many)} |\n"
          f"ratio {mn / m1:.2f}x")

    print("\n2. end to end, train_model, 1 epoch")
    with tempfile.TemporaryDirectory(prefix="bench-procs-") as d:
        write_sample_shards(d, videos={"train": args.videos, "val": 3, "test": 2}, frames=8, perturbed=())
        train = ShardDataset(shard_files(d, "train"), RowFilter(split="train", augmentations=None))
        val = ShardDataset(shard_files(d, "val"), RowFilter(split="val"))
        runs = {1: [], args.processes: []}
        for r in range(2):
            for n in ((1, args.processes) if r == 0 else (args.processes, 1)):
                runs[n].append(end_to_end(args.model, n, train, val))
                print(f"  {n} process(es): {runs[n][-1]}", flush=True)
    med = {n: {k: statistics.median(x[k] for x in v) for k in v[0]} for n, v in runs.items()}
    a, b = med[1], med[args.processes]
    extra = b["outside"] - a["outside"]
    gain = 1 / a["rate"] - 1 / b["rate"]  # seconds saved per image
    print(f"\n| end to end ({len(train)} train images) | loop img/s | seconds outside the loop |\n|---|---|---|\n"
          f"| 1 process, 2 loader workers | {a['rate']:.1f} | {a['outside']:.1f} |\n"
          f"| {args.processes} processes | {b['rate']:.1f} | {b['outside']:.1f} |\n"
          f"loop ratio {b['rate'] / a['rate']:.2f}x; {args.processes} processes cost {extra:.1f} s more outside "
          f"the loop" + (f", repaid after {extra / gain:.0f} images (MIN_PARALLEL_IMAGES = {MIN_PARALLEL_IMAGES})"
                         if gain > 0 else ", and are not faster here"))

    print("\nchoose_processes on this machine (batch 32):")
    for images in (500, MIN_PARALLEL_IMAGES, 126_000 * 10):
        print(f"  {images} images: {choose_processes('auto', 'cpu', images, 32)}")


if __name__ == "__main__":
    main()
