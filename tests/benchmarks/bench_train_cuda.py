"""CUDA check of the training path (mixed precision, pinned memory) on small real-face shards,
plus model-step throughput in fp32 and autocast. Not run by CI; needs a GPU.

    python tests/benchmarks/bench_train_cuda.py [--work DIR] [--epochs 6]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from mesodata.detector.data import RowFilter, ShardDataset, shard_files
from mesodata.detector.evaluate import evaluate_frame
from mesodata.detector.infer import score_loader
from mesodata.detector.models import create_model
from mesodata.detector.train import TrainConfig, make_loader, make_train_step, train_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.fixtures
from tests.fixtures.samples import write_sample_shards  # noqa: E402


def step_rate(name: str, batch: int, steps: int = 20) -> float:
    """Images/s of train.py's CUDA step (channels_last, bf16/fp16 autocast), data on the GPU."""
    dev = torch.device("cuda")
    model = create_model(name).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    step = make_train_step(model, opt, dev, True, False)
    x = torch.rand(batch, 3, 256, 256, device=dev)
    y = torch.randint(0, 2, (batch,), device=dev)
    for _ in range(3):
        step(x, y)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=None)
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    assert torch.cuda.is_available(), "no CUDA GPU"
    print(torch.__version__, torch.cuda.get_device_name(0))
    work = args.work or tempfile.mkdtemp()
    write_sample_shards(work)
    dev = torch.device("cuda")
    for name in ("meso4", "mesoinception4"):
        cfg = TrainConfig(model=name, epochs=args.epochs, batch_size=16, device="cuda", workers=2)
        tr = ShardDataset(shard_files(work, "train"), RowFilter(split="train", augmentations=None))
        va = ShardDataset(shard_files(work, "val"), RowFilter(split="val"))
        res = train_model(cfg, tr, va)
        te = ShardDataset(shard_files(work, "test"), RowFilter(split="test"))
        frame, _ = score_loader(res.model, make_loader(te, 64, 2, dev), dev)
        frame["score"] = frame["prob"]
        m = evaluate_frame(frame)
        print(f"{name}: best epoch {res.best_epoch}, first/last train loss "
              f"{res.history[0]['train_loss']:.3f}/{res.history[-1]['train_loss']:.3f}, "
              f"test frame AUC {m['frame']['auc']:.3f} ACC {m['frame']['acc']:.3f}, video ACC {m['video']['acc']:.3f}")
    for batch in (32, 256):
        print(f"mesoinception4 batch {batch}: {step_rate('mesoinception4', batch):.0f} img/s (model step)")


if __name__ == "__main__":
    main()
