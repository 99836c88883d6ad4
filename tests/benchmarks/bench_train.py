"""Training throughput of MesoInception-4 on this CPU: the plain fp32 loop and the optimised one
side by side, plus one row per lever (issue 9). Not run by CI.

    python tests/benchmarks/bench_train.py [--model mesoinception4] [--steps 6] [--compile] [--profile]

--profile: only where one data-parallel rank's step spends its CPU (1 thread, 16 images, the
default channels-last + bf16 step), by kind of operator, from torch.profiler.

Batches are real 256x256 face crops held in memory, so the figures are the model step alone
(decoding runs in DataLoader workers during training). The loss check trains plain and optimised
from the same initial weights on the same batches and prints both loss curves.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mesodata.detector.data import to_tensor
from mesodata.detector.models import create_model
from mesodata.detector.train import cpu_has_native_bf16, make_train_step

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.fixtures
from tests.fixtures.samples import astronaut_face_crop  # noqa: E402


def _batches(n: int, batch: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        crops = [astronaut_face_crop(rng, {"dx": rng.uniform(-10, 10)})[:, :, ::-1] for _ in range(batch)]
        x = torch.stack([to_tensor(np.ascontiguousarray(c)) for c in crops])
        y = torch.from_numpy(rng.integers(0, 2, batch))
        out.append((x, y))
    return out


def measure(model_name: str, batch: int, steps: int, channels_last: bool = False, bf16: bool = False,
            compile_: bool = False, threads: int | None = None, warmup: int = 2) -> float:
    """Images per second of full training steps (forward, backward, Adam)."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(model_name)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    net = torch.compile(model) if compile_ else model
    # make_train_step calls model(x); give it the compiled module with the same parameters
    step = make_train_step(net, opt, torch.device("cpu"), channels_last, bf16)
    data = _batches(min(steps, 3), batch)
    for i in range(warmup):
        step(*data[i % len(data)])
    t0 = time.perf_counter()
    for i in range(steps):
        step(*data[i % len(data)])
    rate = steps * batch / (time.perf_counter() - t0)
    torch.set_num_threads(old)
    return rate


def _ddp_worker(rank: int, world: int, model_name: str, batch: int, steps: int, bf16: bool, port: int,
                queue) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model(model_name).to(memory_format=torch.channels_last)
    net = torch.nn.parallel.DistributedDataParallel(model)
    step = make_train_step(net, torch.optim.Adam(net.parameters(), 1e-3), torch.device("cpu"), True, bf16)
    data = _batches(2, batch // world, seed=rank)
    for i in range(2):
        step(*data[i % 2])
    dist.barrier()
    t0 = time.perf_counter()
    for i in range(steps):
        step(*data[i % 2])
    queue.put(steps * (batch // world) / (time.perf_counter() - t0))
    dist.destroy_process_group()


def measure_ddp(model_name: str, batch: int, steps: int, bf16: bool, world: int = 2) -> float:
    """Images per second of data-parallel training: `world` single-thread processes, gradients
    averaged by DistributedDataParallel (gloo), `batch` split between them."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:  # a free loopback port for the process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, world, model_name, batch, steps, bf16, port, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    rates = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def loss_curves(model_name: str, steps: int, batch: int = 32) -> tuple[list[float], list[float]]:
    data = _batches(4, batch, seed=1)
    curves = []
    for cl, bf16 in ((False, False), (True, cpu_has_native_bf16())):
        torch.manual_seed(0)
        model = create_model(model_name)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        step = make_train_step(model, torch.optim.Adam(model.parameters(), 1e-3), torch.device("cpu"), cl, bf16)
        curves.append([step(*data[i % 4])[0] / batch for i in range(steps)])
    return curves[0], curves[1]


def profile(model_name: str, steps: int, batch: int = 16) -> None:
    """Self CPU of one rank's training step by kind of operator (forward and backward together)."""
    from collections import Counter

    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model(model_name).to(memory_format=torch.channels_last)
    step = make_train_step(model, torch.optim.Adam(model.parameters(), 1e-3), torch.device("cpu"), True,
                           cpu_has_native_bf16())
    data = _batches(min(steps, 3), batch)
    for i in range(2):
        step(*data[i % len(data)])
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(*data[i % len(data)])
    kinds = {"convolution": ("convolution",), "batch norm": ("batch_norm",), "max-pool": ("max_pool",),
             "ReLU": ("threshold_backward", "clamp_min", "relu"), "concatenation": ("aten::cat",)}
    by_kind: Counter = Counter()
    for e in prof.key_averages():
        if not e.key.startswith("aten::"):
            continue
        kind = next((k for k, names in kinds.items() if any(n in e.key for n in names)), "other")
        by_kind[kind] += e.self_cpu_time_total
    total = sum(by_kind.values())
    print(f"{model_name}, 1 thread, batch {batch}, channels-last + bf16, {steps} steps: "
          f"{steps * batch / (total / 1e6):.1f} img/s of operator time\n\n| operators | share of self CPU |\n|---|---|")
    for kind, t in by_kind.most_common():
        print(f"| {kind} | {100 * t / total:.0f} % |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mesoinception4")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (~40 s warm-up)")
    ap.add_argument("--profile", action="store_true", help="only profile one data-parallel rank's step")
    args = ap.parse_args()
    if args.profile:
        profile(args.model, args.steps)
        return
    bf16 = cpu_has_native_bf16()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {bf16}")
    plain = measure(args.model, 32, args.steps)
    best = measure(args.model, 32, args.steps, channels_last=True, bf16=bf16)
    print(f"plain fp32: {plain:.1f} img/s | optimised (train.py default): {best:.1f} img/s | "
          f"ratio {best / plain:.2f}x")
    levers = [
        ("channels_last", dict(channels_last=True)),
        ("bf16 autocast", dict(bf16=True)),
        ("channels_last + bf16", dict(channels_last=True, bf16=True)),
        ("channels_last + bf16, 1 thread", dict(channels_last=True, bf16=True, threads=1)),
        ("channels_last + bf16, batch 64", dict(channels_last=True, bf16=True, batch=64)),
        ("channels_last, batch 16", dict(channels_last=True, batch=16)),
    ]
    if args.compile:
        levers += [("channels_last + torch.compile", dict(channels_last=True, compile_=True)),
                   ("channels_last + bf16 + torch.compile", dict(channels_last=True, bf16=True, compile_=True))]
    print(f"\n| lever | img/s | vs plain fp32 |\n|---|---|---|\n| plain fp32, batch 32 | {plain:.1f} | 1.00x |")
    for name, kw in levers:
        batch = kw.pop("batch", 32)
        rate = measure(args.model, batch, args.steps, **kw)
        print(f"| {name} | {rate:.1f} | {rate / plain:.2f}x |", flush=True)
    rate = measure_ddp(args.model, 32, args.steps, bf16)
    print(f"| 2 processes x 1 thread (DDP), channels_last + bf16, 16 each | {rate:.1f} | {rate / plain:.2f}x |",
          flush=True)
    a, b = loss_curves(args.model, 12)
    print("\nloss, plain fp32:", " ".join(f"{v:.3f}" for v in a))
    print("loss, optimised: ", " ".join(f"{v:.3f}" for v in b))


if __name__ == "__main__":
    main()
