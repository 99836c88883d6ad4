"""Train one MesoNet as in the paper: batch 32, Adam(0.9, 0.999), lr 1e-3 divided by 10 down to
1e-6 (`--lr-schedule`: every 1000 iterations as the paper states, or spread over the run), label
1 = fake. Loss (`--loss`): the paper's squared error 1/2 (sigmoid(z) - y)^2, or binary
cross-entropy on the logit z. Class balance (`--balance`): none, loss weights, or a resampling of
the training stream.

The checkpoint is chosen on the validation split only (lowest val loss, the training loss); the
test split is never read here. CPU speed levers (measured in tests/benchmarks/bench_train.py): channels_last memory
format (the big one, ~4x with oneDNN) and bf16 autocast where the CPU has native bf16; on a CPU with
several cores, data-parallel processes (`processes="auto"`, bench_train_processes.py).

With a checkpoint path, training resumes: see checkpoint.py.
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import checkpoint as ckpt_io
from .data import ShardDataset
from .infer import autocast_for, resolve_device, score_loader
from .models import MesoNet, create_model

__all__ = ["TrainConfig", "TrainResult", "train_model", "lr_step_iterations", "lr_plan", "bn_momentum_for",
           "make_loader", "make_train_step", "cpu_has_native_bf16", "seed_everything", "loss_value",
           "class_weights", "choose_processes", "available_cores", "LR_SCHEDULES", "LOSSES", "BALANCES",
           "CHECKPOINT_EVERY"]

LR_SCHEDULES = ("dynamic", "paper")
LOSSES = ("mse", "bce")
BALANCES = ("none", "weights", "sampler")

log = logging.getLogger("mesodata")

# processes="auto" (measured in tests/benchmarks/bench_train_processes.py): on a CPU, one
# single-thread process per core, at least MIN_PROCESS_BATCH images each (BatchNorm sees only its
# process's share of a batch), and only for nets that train on at least MIN_PARALLEL_IMAGES images
# (epochs x train rows): below, spawning the processes costs more than they save.
MIN_PROCESS_BATCH = 8
MIN_PARALLEL_IMAGES = 4000
CHECKPOINT_EVERY = 500  # iterations between mid-epoch checkpoints (and one at each epoch end)


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
    # "auto": choose_processes' rule.
    processes: int | str = "auto"


@dataclass
class TrainResult:
    model: MesoNet
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    lr_step: int = 0
    config: dict = field(default_factory=dict)
    # with train_model(..., keep_epochs=True): each epoch's weights, for studies of selection
    epoch_states: list[dict] = field(default_factory=list)


def lr_step_iterations(total_iterations: int, requested: int = 1000, schedule: str = "dynamic",
                       lr: float = 1e-3, lr_min: float = 1e-6) -> int:
    """Iterations between lr divisions by 10.

    paper: `requested` (the paper's 1000), whatever the run's length.
    dynamic: the divisions (3 from 1e-3 to 1e-6) are spread so that the floor is reached at 90 %
    of the run, step = floor(0.9 * total / divisions), but never closer than the paper's
    `requested` step: max(requested, floor(0.9 * total / divisions)). On a long run the last
    tenth runs at the floor and each level before gets an equal share (the paper's fixed 1000
    puts ~92 % of a full-size 10-epoch run at the floor); a run under 3,334 iterations is never
    decayed faster than the paper decays. Measured on the realistic fixture (273 iterations):
    spread steps of 81 left lr at 1e-4 after the first epoch and val loss flat from there (SVM
    head 82.8 % test frame AUC); the paper's step, 88.3 % (README, "On a realistic fixture")."""
    if schedule == "paper":
        return max(1, int(requested))
    if schedule != "dynamic":
        raise ValueError(f"unknown lr schedule {schedule!r}: use {' or '.join(LR_SCHEDULES)}")
    divisions = max(1, round(math.log10(lr / lr_min)))
    return max(1, int(requested), math.floor(0.9 * total_iterations / divisions))


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


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container or taskset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_processes(requested: int | str, device: str, images: int, batch_size: int,
                     cores: int | None = None) -> tuple[int, str]:
    """(training processes, why). `requested` is a count or "auto"; `images` is what one net trains
    on (epochs x train rows). CUDA trains in one process; on a CPU "auto" takes one process per core
    where each keeps >= MIN_PROCESS_BATCH images of a batch and the run is long enough to repay
    spawning them."""
    if requested != "auto":
        n = int(requested)
        if n < 1:
            raise ValueError(f"processes must be >= 1 or 'auto', not {requested!r}")
        if device != "cpu" and n > 1:
            return 1, f"{n} requested; on {device} training runs in one process"
        return n, "requested"
    if device != "cpu":
        return 1, f"auto: one process on {device}"
    cores = cores or available_cores()
    n = min(cores, max(1, batch_size // MIN_PROCESS_BATCH))
    if n == 1:
        return 1, f"auto: {cores} core(s), batch {batch_size}"
    if images < MIN_PARALLEL_IMAGES:
        return 1, (f"auto: {images} images to train, under {MIN_PARALLEL_IMAGES}, where spawning "
                   "processes costs more than it saves")
    return n, f"auto: {cores} cores, {images} images to train, {batch_size // n} images per process and step"


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
                on_epoch: Callable[[dict], None] | None = None, keep_epochs: bool = False,
                checkpoint: str | Path | None = None, checkpoint_every: int = CHECKPOINT_EVERY) -> TrainResult:
    """Train `cfg.model` on `train_ds`, keep the weights of the epoch with the lowest val loss.
    `keep_epochs` also returns every epoch's weights (`epoch_states`; one process only).
    With `checkpoint` (a file path), the training state is saved there every `checkpoint_every`
    iterations and at each epoch end, and a training started with the same options on the same
    rows resumes from it (mid-epoch: the batches already seen are skipped in the same order)."""
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, not {checkpoint_every}")
    n, why = choose_processes(cfg.processes, resolve_device(cfg.device).type, len(train_ds) * cfg.epochs,
                              cfg.batch_size)
    cfg = replace(cfg, processes=n)
    if keep_epochs and cfg.processes > 1:
        raise ValueError("keep_epochs needs processes=1")
    saving = (Path(checkpoint), checkpoint_every) if checkpoint is not None else None
    if cfg.processes > 1:
        result = _train_data_parallel(cfg, train_ds, val_ds, saving)
        for row in result.history:
            if on_epoch:
                on_epoch(row)
    else:
        result = _train(cfg, train_ds, val_ds, on_epoch, keep_epochs=keep_epochs, saving=saving)
    result.config["processes_choice"] = why
    return result


class _Resume:
    """Where one rank picks up: the shared checkpoint, and this rank's running totals, RNG state and
    (mid-epoch, ranks > 0) its own BatchNorm running statistics."""

    def __init__(self, main: dict, totals: list, rng: dict | None, fallback_seed: int,
                 buffers: dict | None = None) -> None:
        self.main, self.totals, self.rng, self.fallback_seed = main, totals, rng, fallback_seed
        self.buffers = buffers or {}
        self.epoch, self.iteration = int(main["epoch"]), int(main["iteration"])

    def model_state(self) -> dict:
        # Inside DDP's join() the buffers are broadcast from the highest rank still training, not
        # from rank 0: each rank must get its own running statistics back, or the resumed run's
        # BatchNorm statistics (and so its val loss) drift from the uninterrupted run's.
        return {**self.main["model"], **self.buffers}

    def restore_rng(self) -> None:
        if self.rng is not None:
            ckpt_io.set_rng_state(self.rng)
        else:  # a rank whose part was not written: reproducible, though not the interrupted stream
            seed_everything(self.fallback_seed)


class _Saver:
    """Writes one net's checkpoint every `every` iterations and at each epoch end; rank 0 writes
    the checkpoint, another rank its part (RNG state, running totals)."""

    def __init__(self, saving: tuple[Path, int], identity: dict, rank: int, world: int,
                 model: torch.nn.Module) -> None:
        (self.path, self.every), self.identity, self.rank, self.world = saving, identity, rank, world
        self.model = model

    def load(self, seed: int) -> _Resume | None:
        main = ckpt_io.load(self.path, self.identity)
        if main is None:
            return None
        if self.rank == 0:
            return _Resume(main, main["totals"], main["rng"], seed)
        if int(main["iteration"]) == 0:  # an epoch end: every rank's RNG state is in the checkpoint
            return _Resume(main, [0.0, 0, 0, 0.0], main["rng_ranks"][self.rank], seed)
        part = ckpt_io.load(ckpt_io.part_path(self.path, self.rank), self.identity)
        if part is not None and part["epoch"] == main["epoch"] and (
                part["iteration"] == main["iteration"] or (part["done"] and part["iteration"] <= main["iteration"])):
            return _Resume(main, part["totals"], part["rng"], seed, part.get("buffers"))
        log.warning("rank %d: its part does not match the checkpoint (killed between the two writes): "
                    "its running totals restart and its RNG is reseeded", self.rank)
        return _Resume(main, [0.0, 0, 0, 0.0], None, seed + 1_000_003 * self.rank + int(main["iteration"]))

    def save(self, epoch: int, iteration: int, totals: list, state: Callable[[], dict] | None = None,
             done: bool = False, rng_ranks: list | None = None) -> None:
        """Rank 0: the whole state (`state()` gives model, optimizer, ...); other ranks: their part."""
        head = {"epoch": epoch, "iteration": iteration, "totals": totals, "rng": ckpt_io.rng_state()}
        if self.rank == 0:
            ranks = rng_ranks if rng_ranks is not None else [head["rng"]]
            ckpt_io.save(self.path, {**head, **state(), "rng_ranks": ranks}, self.identity)
        else:
            buffers = {name: b.detach().clone() for name, b in self.model.named_buffers()}
            ckpt_io.save(ckpt_io.part_path(self.path, self.rank), {**head, "done": done, "buffers": buffers},
                         self.identity)


def _skip(batches, n: int) -> int:
    """Draw (and drop) up to `n` batches: those a resumed epoch already trained on."""
    done = 0
    for _ in range(n):
        if next(batches, None) is None:
            break
        done += 1
    return done


def _train(cfg: TrainConfig, train_ds: ShardDataset, val_ds: ShardDataset,
           on_epoch: Callable[[dict], None] | None = None, rank: int = 0, world: int = 1,
           keep_epochs: bool = False, saving: tuple[Path, int] | None = None) -> TrainResult:
    """The training loop; with world > 1 it runs in each of `world` processes of a gloo group, and
    only rank 0 validates, logs and keeps the best weights. `saving` = (checkpoint path, every N
    iterations): see train_model."""
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
    identity = {"config": asdict(cfg), "train_rows": n_train, "val_rows": len(val_ds), "processes": world}
    saver = _Saver(saving, identity, rank, world, model) if saving else None
    resume = saver.load(cfg.seed) if saver else None
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume.model_state())
        optimizer.load_state_dict(resume.main["optimizer"])
        sched.load_state_dict(resume.main["scheduler"])
        result.history, result.best_epoch = list(resume.main["history"]), int(resume.main["best_epoch"])
        best_loss, best_state = float(resume.main["best_loss"]), resume.main["best_state"]
        start_epoch = resume.epoch
        result.config["resumed_from"] = {"epoch": resume.epoch, "iteration": resume.iteration}
        if rank == 0 and resume.epoch >= cfg.epochs:
            log.info("%s: its training had completed (checkpoint %s)", cfg.model, saver.path)
        elif rank == 0:
            log.info("%s: resuming from checkpoint %s at epoch %d/%d, iteration %d of %d (the batches "
                     "before it are skipped in the same order)", cfg.model, saver.path,
                     resume.epoch + 1, cfg.epochs, resume.iteration, iters_per_epoch)

    def state() -> dict:  # what rank 0's checkpoint holds besides position, totals and RNG
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": sched.state_dict(),
                "history": result.history, "best_epoch": result.best_epoch, "best_loss": best_loss,
                "best_state": best_state}

    for epoch in range(start_epoch, cfg.epochs):
        train_ds.set_epoch(epoch)
        model.train()
        prog = _Progress(n_train, f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}") if rank == 0 else None
        here = resume if resume is not None and epoch == start_epoch else None
        tot_loss, tot_correct, seen, spent = here.totals if here else (0.0, 0, 0, 0.0)
        if here and not here.iteration:
            here.restore_rng()  # as it was before this epoch's loader drew its seed
        t0 = time.perf_counter()
        it = 0
        # ranks may get unequal shares of row groups: join() lets a rank that runs out shadow the others
        with (net.join() if world > 1 else contextlib.nullcontext()):
            batches = iter(make_loader(stream, batch_size, loader_workers, device))
            if here and here.iteration:
                it = _skip(batches, here.iteration)
                here.restore_rng()  # as it was after the last batch the checkpoint had trained on
            for batch in batches:
                loss_sum, correct = step(batch["image"], batch["label"])
                sched.step()
                n = len(batch["label"])
                tot_loss, tot_correct, seen = tot_loss + loss_sum, tot_correct + correct, seen + n
                it += 1
                if prog:
                    prog.update(n * world, loss_sum / n)
                if saver and it % saver.every == 0:
                    saver.save(epoch, it, [tot_loss, tot_correct, seen, spent + time.perf_counter() - t0], state)
            if saver and rank > 0:  # this rank's share is done; the others may still be training
                saver.save(epoch, it, [tot_loss, tot_correct, seen, spent + time.perf_counter() - t0], done=True)
        rng_ranks = None
        if world > 1:
            totals = torch.tensor([tot_loss, tot_correct, seen], dtype=torch.float64)
            torch.distributed.all_reduce(totals)
            tot_loss, tot_correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
            if saver:  # every rank is here: gather their RNG states for the epoch-end checkpoint
                rng_ranks = [None] * world
                torch.distributed.all_gather_object(rng_ranks, ckpt_io.rng_state())
        train_time = spent + time.perf_counter() - t0
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
        if keep_epochs:
            result.epoch_states.append(copy.deepcopy(model.state_dict()))
        if val_loss < best_loss:  # selection on val only
            best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
            result.best_epoch = epoch + 1
        if saver:
            if rng_ranks is not None:
                rng_ranks[0] = ckpt_io.rng_state()  # rank 0's after validation
            saver.save(epoch + 1, 0, [0.0, 0, 0, 0.0], state, rng_ranks=rng_ranks)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def _data_parallel_worker(rank: int, world: int, port: int, cfg: TrainConfig, train_ds: ShardDataset,
                          val_ds: ShardDataset, out_dir: str, saving: tuple[Path, int] | None = None) -> None:
    import torch.distributed as dist

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = _train(cfg, train_ds, val_ds, rank=rank, world=world, saving=saving)
        if rank == 0:
            torch.save(result.model.state_dict(), os.path.join(out_dir, "best.pt"))
            meta = {"history": result.history, "best_epoch": result.best_epoch, "lr_step": result.lr_step,
                    "config": {**result.config, "processes": world}}
            with open(os.path.join(out_dir, "result.json"), "w") as f:
                json.dump(meta, f)
        dist.barrier()  # rank 0 validates the last epoch after the others finished training
    finally:
        dist.destroy_process_group()


def _train_data_parallel(cfg: TrainConfig, train_ds: ShardDataset, val_ds: ShardDataset,
                         saving: tuple[Path, int] | None = None) -> TrainResult:
    """Run `_train` in `cfg.processes` spawned processes; rank 0's best weights come back by file,
    loaded with weights_only=True like any other weights."""
    import torch.multiprocessing as mp

    with socket.socket() as sock:  # a free loopback port for the process group
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="mesodata-ddp-") as out_dir:
        mp.spawn(_data_parallel_worker, args=(cfg.processes, port, cfg, train_ds, val_ds, out_dir, saving),
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

