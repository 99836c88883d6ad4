"""Train one MesoNet as in the paper: batch 32, Adam(0.9, 0.999), lr 1e-3 divided by 10 down to
1e-6 (`--lr-schedule`: every 1000 iterations as the paper states, or spread over the run), label
1 = fake. Loss (`--loss`): the paper's squared error 1/2 (sigmoid(z) - y)^2, or binary
cross-entropy on the logit z. Class balance (`--balance`): none, loss weights, or a resampling of
the training stream.

The checkpoint is chosen on the validation split only (lowest val loss, the training loss); the
test split is never read here. CPU speed levers (measured in tests/benchmarks/bench_train.py): channels_last memory
format (the big one, ~4x with oneDNN) and bf16 autocast where the CPU has native bf16.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
import tempfile
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .data import ShardDataset
from .infer import autocast_for, resolve_device, score_loader
from .models import MesoNet, create_model

__all__ = ["TrainConfig", "TrainResult", "train_model", "lr_step_iterations", "lr_plan", "bn_momentum_for",
           "make_loader", "make_train_step", "cpu_has_native_bf16", "seed_everything", "loss_value",
           "class_weights", "LR_SCHEDULES", "LOSSES", "BALANCES"]

LR_SCHEDULES = ("dynamic", "paper")
LOSSES = ("mse", "bce")
BALANCES = ("none", "weights", "sampler")

log = logging.getLogger("mesodata")


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively (AVX512-BF16 / AMX); elsewhere bf16 is emulated and slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass
class TrainConfig:
    """Training parameters; defaults are the paper's where it gives them."""

    model: str = "mesoinception4"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    lr_min: float = 1e-6
    lr_step: int = 1000  # iterations per /10 under --lr-schedule paper
    lr_schedule: str = "dynamic"  # dynamic: /10 steps spread so 1e-6 is reached near the end; paper: every lr_step
    loss: str = "bce"  # bce: cross-entropy on the logit; mse: the paper's 1/2 (sigmoid - y)^2
    balance: str = "weights"  # none | weights (loss weighted per class) | sampler (resampled stream)
    betas: tuple[float, float] = (0.9, 0.999)
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    shuffle_buffer: int = 1024
    channels_last: bool = True
    cpu_bf16: bool | None = None  # None: on when the CPU has native bf16
    threads: int | None = None  # torch intra-op threads; None keeps PyTorch's choice
    bn_momentum: float | None = None  # None: bn_momentum_for(total iterations)
    # CPU data parallelism: N single-thread processes, each on 1/N of every batch, gradients averaged
    # (DDP over gloo). The thin layers parallelise badly over threads; over processes they scale.
    processes: int = 1


@dataclass
class TrainResult:
    model: MesoNet
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    lr_step: int = 0
    config: dict = field(default_factory=dict)


def lr_step_iterations(total_iterations: int, requested: int = 1000, schedule: str = "dynamic",
                       lr: float = 1e-3, lr_min: float = 1e-6) -> int:
    """Iterations between lr divisions by 10.

    paper: `requested` (the paper's 1000), whatever the run's length.
    dynamic: the divisions (3 from 1e-3 to 1e-6) are spread so that the floor is reached at 90 %
    of the run: step = floor(0.9 * total / divisions). The last tenth runs at the floor; before,
    each level gets an equal share. (The paper's fixed 1000 puts ~92 % of a full-size 10-epoch run
    at the floor, and never leaves 1e-3 on a small one.)"""
    if schedule == "paper":
        return max(1, int(requested))
    if schedule != "dynamic":
        raise ValueError(f"unknown lr schedule {schedule!r}: use {' or '.join(LR_SCHEDULES)}")
    divisions = max(1, round(math.log10(lr / lr_min)))
    return max(1, math.floor(0.9 * total_iterations / divisions))


def lr_plan(total_iterations: int, iters_per_epoch: int, cfg: "TrainConfig") -> dict:
    """The schedule that will run: step, and the iteration / epoch at which lr reaches the floor
    (None when the run ends first)."""
    step = lr_step_iterations(total_iterations, cfg.lr_step, cfg.lr_schedule, cfg.lr, cfg.lr_min)
    divisions = max(1, round(math.log10(cfg.lr / cfg.lr_min)))
    floor_it = step * divisions
    reached = floor_it <= total_iterations
    return {"schedule": cfg.lr_schedule, "lr_step": step, "total_iterations": total_iterations,
            "iterations_per_epoch": iters_per_epoch,
            "floor_iteration": floor_it if reached else None,
            "floor_epoch": round(floor_it / iters_per_epoch, 3) if reached else None,
            "share_at_floor": round(1 - floor_it / total_iterations, 4) if reached else 0.0}


def loss_value(logits: torch.Tensor, y: torch.Tensor, kind: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean training loss of a batch; `weight` (per sample) rescales each term.
    mse: the paper's l(a, y) = 1/2 (a - y)^2 on a = sigmoid(logit). bce: cross-entropy on the logit."""
    if kind == "mse":
        per = 0.5 * (torch.sigmoid(logits) - y) ** 2
    elif kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    else:
        raise ValueError(f"unknown loss {kind!r}: use {' or '.join(LOSSES)}")
    if weight is not None:
        return (per * weight).sum() / weight.sum()
    return per.mean()


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Per-class weights n / (2 n_c): each class carries half of the total weight."""
    labels = np.asarray(labels).astype(int)
    n = len(labels)
    out = {}
    for c in (0, 1):
        k = int((labels == c).sum())
        out[c] = n / (2 * k) if k else 0.0
    return out


class _Rebalanced(IterableDataset):
    """A training stream where class c is emitted at rate n / (2 n_c) per row (floor + Bernoulli of
    the fraction, seeded by epoch and worker): majority rows are subsampled, minority rows
    repeated, so each class is about half of an epoch of about the same length."""

    def __init__(self, inner: ShardDataset, rates: dict[int, float]) -> None:
        super().__init__()
        self.inner, self.rates = inner, rates

    def __iter__(self):
        info = get_worker_info()
        rng = random.Random(f"balance:{self.inner.seed}:{self.inner.epoch}:{info.id if info else 0}")
        for row in self.inner:
            r = self.rates.get(int(row["label"]), 1.0)
            k = int(r) + (rng.random() < r - int(r))
            for _ in range(k):
                yield row


def bn_momentum_for(total_iterations: int) -> float:
    """BatchNorm running-average momentum (PyTorch convention). Keras' 0.01 needs ~1/0.01 = 100
    iterations per time constant; on a short run the running statistics would still be near their
    initial values at evaluation. Rule: time constant <= 5% of the run, i.e.
    clip(20 / total_iterations, 0.01, 0.1); from 2000 iterations on this is Keras' 0.01."""
    return float(min(0.1, max(0.01, 20 / max(total_iterations, 1))))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loader(dataset: IterableDataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                      pin_memory=device.type == "cuda",
                      prefetch_factor=4 if workers else None)


def make_train_step(model: MesoNet, optimizer: torch.optim.Optimizer, device: torch.device,
                    channels_last: bool, cpu_bf16: bool, loss: str = "bce",
                    weights: dict[int, float] | None = None) -> Callable[[torch.Tensor, torch.Tensor], tuple[float, int]]:
    """One optimisation step on a batch -> (summed loss, number correct). Shared with the benchmark.
    `weights` (class -> weight) weights each sample's loss term by its class."""
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not torch.cuda.is_bf16_supported())
    wvec = torch.tensor([weights.get(0, 1.0), weights.get(1, 1.0)], device=device) if weights else None
    loss_kind = loss

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True).float()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_for(device, cpu_bf16):
            logits = model(x).float()
        w = wvec[y.long()] if wvec is not None else None
        loss = loss_value(logits, y, kind=loss_kind, weight=w)  # in fp32, outside autocast
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            correct = int(((logits > 0).float() == y).sum())
        return float(loss.detach()) * len(y), correct

    return step


class _Progress:
    """An epoch's images (pipeline.progress): a bar with the loss on a terminal, otherwise a log
    line every ~30 s."""

    def __init__(self, total: int, desc: str) -> None:
        from mesodata.pipeline.progress import Progress

        self.bar = Progress(total, desc, "img", leave=False, log_every=30)

    def update(self, n: int, loss: float) -> None:
        self.bar.update(n, postfix=f"loss={loss:.4f}")

    @property
    def rate(self) -> float:
        return self.bar.rate

    def close(self) -> None:
        self.bar.close()


def train_model(cfg: TrainConfig, train_ds: ShardDataset, val_ds: ShardDataset,
                on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train `cfg.model` on `train_ds`, keep the weights of the epoch with the lowest val loss."""
    if cfg.processes > 1 and resolve_device(cfg.device).type == "cpu":
        result = _train_data_parallel(cfg, train_ds, val_ds)
        for row in result.history:
            if on_epoch:
                on_epoch(row)
        return result
    return _train(cfg, train_ds, val_ds, on_epoch)


def _train(cfg: TrainConfig, train_ds: ShardDataset, val_ds: ShardDataset,
           on_epoch: Callable[[dict], None] | None = None, rank: int = 0, world: int = 1) -> TrainResult:
    """The training loop; with world > 1 it runs in each of `world` processes of a gloo group, and
    only rank 0 validates, logs and keeps the best weights."""
    seed_everything(cfg.seed)
    # the caller's dataset is never changed: training shuffles a copy
    train_ds = copy.copy(train_ds)
    train_ds.shuffle, train_ds.seed, train_ds.shuffle_buffer = True, cfg.seed, cfg.shuffle_buffer
    device = resolve_device(cfg.device)
    if world > 1:
        torch.set_num_threads(1)
    elif cfg.threads:
        torch.set_num_threads(cfg.threads)
    cpu_bf16 = cpu_has_native_bf16() if cfg.cpu_bf16 is None else cfg.cpu_bf16
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # tiny weights late in training are otherwise slow on x86
    n_train = len(train_ds)
    iters_per_epoch = max(1, math.ceil(n_train / cfg.batch_size))
    bn_momentum = cfg.bn_momentum or bn_momentum_for(iters_per_epoch * cfg.epochs)
    model = create_model(cfg.model, bn_momentum=bn_momentum).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model if world == 1 else torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=cfg.betas)
    plan = lr_plan(iters_per_epoch * cfg.epochs, iters_per_epoch, cfg)
    step_n = plan["lr_step"]
    floor = cfg.lr_min / cfg.lr
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(floor, 0.1 ** (it // step_n)))
    if cfg.balance not in BALANCES:
        raise ValueError(f"unknown balance {cfg.balance!r}: use {' or '.join(BALANCES)}")
    labels = train_ds.labels() if cfg.balance != "none" else None
    weights = class_weights(labels) if labels is not None else None
    step = make_train_step(net, optimizer, device, cfg.channels_last, cpu_bf16, loss=cfg.loss,
                           weights=weights if cfg.balance == "weights" else None)
    stream = _Rebalanced(train_ds, weights) if cfg.balance == "sampler" else train_ds
    batch_size, loader_workers = cfg.batch_size // world, (cfg.workers if world == 1 else 0)
    val_loader = make_loader(val_ds.whole(), max(cfg.batch_size, 64), loader_workers, device)
    if rank == 0:
        floor_at = (f"floor {cfg.lr_min:g} from iteration {plan['floor_iteration']} (epoch "
                    f"{plan['floor_epoch']:.2f})" if plan["floor_iteration"] else
                    f"floor {cfg.lr_min:g} not reached")
        log.info("%s: %d train / %d val images, %d iterations/epoch, loss %s, balance %s, "
                 "lr /10 every %d iterations (%s schedule, %s), device %s%s%s", cfg.model, n_train,
                 len(val_ds), iters_per_epoch, cfg.loss, cfg.balance, step_n, cfg.lr_schedule, floor_at,
                 device, ", bf16 autocast" if device.type == "cuda" or cpu_bf16 else "",
                 f", {world} processes x {batch_size} images" if world > 1 else "")

    result = TrainResult(model=model, lr_step=step_n,
                         config={**asdict(cfg), "cpu_bf16": cpu_bf16, "device": str(device),
                                 "bn_momentum": bn_momentum, "lr_step": step_n, "lr_plan": plan,
                                 "class_weights": weights})
    best_loss, best_state = math.inf, None
    for epoch in range(cfg.epochs):
        train_ds.set_epoch(epoch)
        model.train()
        prog = _Progress(n_train, f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}") if rank == 0 else None
        tot_loss, tot_correct, seen = 0.0, 0, 0
        t0 = time.perf_counter()
        # ranks may get unequal shares of row groups: join() lets a rank that runs out shadow the others
        with (net.join() if world > 1 else contextlib.nullcontext()):
            for batch in make_loader(stream, batch_size, loader_workers, device):
                loss_sum, correct = step(batch["image"], batch["label"])
                sched.step()
                n = len(batch["label"])
                tot_loss, tot_correct, seen = tot_loss + loss_sum, tot_correct + correct, seen + n
                if prog:
                    prog.update(n * world, loss_sum / n)
        if world > 1:
            totals = torch.tensor([tot_loss, tot_correct, seen], dtype=torch.float64)
            torch.distributed.all_reduce(totals)
            tot_loss, tot_correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
        train_time = time.perf_counter() - t0
        if prog:
            prog.close()
        if rank != 0:
            continue
        frame, _ = score_loader(model, val_loader, device, channels_last=cfg.channels_last,
                                cpu_bf16=cpu_bf16)
        val_loss = _val_loss(frame["logit"].to_numpy(), frame["label"].to_numpy(), cfg.loss)
        row = {"epoch": epoch + 1, "train_loss": tot_loss / max(seen, 1),
               "train_acc": tot_correct / max(seen, 1), "val_loss": val_loss,
               "val_acc": float(((frame["logit"] > 0).astype(int) == frame["label"]).mean()),
               "lr": optimizer.param_groups[0]["lr"], "images_per_s": seen / max(train_time, 1e-9),
               "seconds": train_time}
        result.history.append(row)
        log.info("%s epoch %d/%d: train loss %.4f acc %.3f | val loss %.4f acc %.3f | %.1f img/s",
                 cfg.model, row["epoch"], cfg.epochs, row["train_loss"], row["train_acc"],
                 row["val_loss"], row["val_acc"], row["images_per_s"])
        if on_epoch:
            on_epoch(row)
        if val_loss < best_loss:  # selection on val only
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
            result.best_epoch = epoch + 1
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def _data_parallel_worker(rank: int, world: int, port: int, cfg: TrainConfig, train_ds: ShardDataset,
                          val_ds: ShardDataset, out_dir: str) -> None:
    import torch.distributed as dist

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = _train(cfg, train_ds, val_ds, rank=rank, world=world)
        if rank == 0:
            torch.save(result.model.state_dict(), os.path.join(out_dir, "best.pt"))
            meta = {"history": result.history, "best_epoch": result.best_epoch, "lr_step": result.lr_step,
                    "config": {**result.config, "processes": world}}
            with open(os.path.join(out_dir, "result.json"), "w") as f:
                json.dump(meta, f)
        dist.barrier()  # rank 0 validates the last epoch after the others finished training
    finally:
        dist.destroy_process_group()


def _train_data_parallel(cfg: TrainConfig, train_ds: ShardDataset, val_ds: ShardDataset) -> TrainResult:
    """Run `_train` in `cfg.processes` spawned processes; rank 0's best weights come back by file,
    loaded with weights_only=True like any other weights."""
    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free loopback port for the process group
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="mesodata-ddp-") as out_dir:
        mp.spawn(_data_parallel_worker, args=(cfg.processes, port, cfg, train_ds, val_ds, out_dir),
                 nprocs=cfg.processes, join=True)
        with open(os.path.join(out_dir, "result.json")) as f:
            meta = json.load(f)
        state = torch.load(os.path.join(out_dir, "best.pt"), weights_only=True)
    model = create_model(cfg.model, bn_momentum=meta["config"]["bn_momentum"])
    model.load_state_dict(state)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return TrainResult(model=model, history=meta["history"], best_epoch=meta["best_epoch"],
                       lr_step=meta["lr_step"], config=meta["config"])


def _val_loss(logits: np.ndarray, labels: np.ndarray, kind: str) -> float:
    """The training loss (unweighted) on val: the selection criterion."""
    if kind == "mse":
        if len(logits) == 0:
            return math.nan
        p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        return float(np.mean(0.5 * (p - labels.astype(np.float64)) ** 2))
    return _bce(logits, labels)


def _bce(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy from logits, numerically stable."""
    if len(logits) == 0:
        return math.nan
    z, y = logits.astype(np.float64), labels.astype(np.float64)
    return float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))

