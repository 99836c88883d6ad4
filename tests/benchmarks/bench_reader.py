"""Benchmark (not a test): how fast the shards are written, and read + decoded into float tensors.

    /work/venv/bin/python tests/benchmarks/bench_reader.py [--videos 24] [--frames 12] [--work DIR]

Builds upstream tables from real footage (the astronaut portrait and the carphone clip, as in
tests/e2e/test_shards.py), runs the shards stage with the paper's augmentations, then reads the train
shards back as float CHW tensors in batches of 32: with `detector.data.ShardDataset` when it
exists (else a minimal pyarrow IterableDataset defined here), in the main process and with 2
DataLoader workers. The reader must deliver at least 3x what training consumes: MesoInception-4
trains at ~19 img/s on this CPU (target >= 100 img/s), so >= 57 img/s (>= 300 for the target).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, IterableDataset, get_worker_info  # noqa: E402

from mesodata.pipeline.runner import LocalExecutor  # noqa: E402
from mesodata.pipeline.stages import shards  # noqa: E402

TRAIN_NOW, TRAIN_TARGET, FACTOR = 19.0, 100.0, 3.0


class SimpleShards(IterableDataset):
    """Fallback reader: row groups split over workers, PNG -> float CHW in [0, 1]."""

    def __init__(self, files):
        self.units = [(f, g) for f in files for g in range(pq.ParquetFile(f).num_row_groups)]

    def __iter__(self):
        import cv2

        info = get_worker_info()
        wid, n = (info.id, info.num_workers) if info else (0, 1)
        for f, g in self.units[wid::n]:
            t = pq.ParquetFile(f).read_row_group(g, columns=["image", "label"])
            for img, label in zip(t["image"].combine_chunks().field("bytes").to_pylist(), t["label"].to_pylist()):
                bgr = cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield {"image": torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float().div_(255), "label": label}


def make_dataset(files):
    try:
        from mesodata.detector.data import RowFilter, ShardDataset
    except ImportError:
        return SimpleShards(files), "SimpleShards (benchmark's own)"
    return ShardDataset(files, row_filter=RowFilter(augmentations=None), shuffle=True, shuffle_buffer=256), \
        "mesodata.detector.data.ShardDataset (shuffle buffer 256)"


def time_loader(files, workers: int, epochs: int = 2) -> tuple[float, float, int]:
    """Best images/s over `epochs` by the wall clock, and (main process only) per CPU-second."""
    ds, _ = make_dataset(files)
    loader = DataLoader(ds, batch_size=32, num_workers=workers, persistent_workers=workers > 0)
    best, best_cpu, n = 0.0, 0.0, 0
    for _ in range(epochs):  # the first epoch of a worker pool includes its start-up
        t0, c0, n = time.perf_counter(), time.process_time(), 0
        for batch in loader:
            x = batch["image"]
            assert x.dtype == torch.float32 and x.shape[1:] == (3, 256, 256)
            n += x.shape[0]
        best = max(best, n / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, n / max(time.process_time() - c0, 1e-9))
    return best, best_cpu, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=24, help="videos per run (2/3 train)")
    ap.add_argument("--frames", type=int, default=12, help="frames per video")
    ap.add_argument("--work", type=Path, help="work dir to (re)use; default a temp dir")
    ap.add_argument("--shard-size", type=int, default=8_000_000)
    ap.add_argument("--workers", type=int, default=2, help="shard-writing workers")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from tests.e2e.test_shards import build_upstream

    work_dir = args.work or Path(tempfile.mkdtemp(prefix="bench-shards-"))
    videos = []
    for i in range(args.videos):
        label = i % 2
        split = ("train", "train", "train", "train", "val", "test")[i % 6]
        src = ("srcA", "srcB")[(i // 2) % 2]
        videos.append((f"{src}/{'fake' if label else 'real'}/{i:04d}", src, label,
                       "Deepfakes" if label else "youtube", split, args.frames))
    work = build_upstream(work_dir, videos)
    params = {"shard_size": args.shard_size, "augment": "paper", "perturb_test": False, "seed": 0,
              "row_group_rows": 128}
    t0 = time.perf_counter()
    state = shards.run(work, params, workers=args.workers, executor=LocalExecutor(args.workers))
    build_s = time.perf_counter() - t0
    info = json.loads(work.path(shards.INFO).read_text())
    files = shards.shard_files(work, "train")
    sizes = [f.stat().st_size for f in files]
    t0 = time.perf_counter()
    raw = sum(len(b) for f in files for b in pq.read_table(f, columns=["image"])["image"].combine_chunks()
              .field("bytes").to_pylist())
    raw_s = time.perf_counter() - t0
    _, reader = make_dataset(files)
    load0 = os.getloadavg()[0]
    one, one_cpu, n = time_loader(files, 0)
    two, _, _ = time_loader(files, 2)
    need_now, need_target = FACTOR * TRAIN_NOW, FACTOR * TRAIN_TARGET
    report = {
        "work": str(work_dir), "rows": state["counts"]["rows"], "train_rows": n,
        "build_seconds": round(build_s, 1), "build_images_per_s": round(state["counts"]["rows"] / build_s, 1),
        "train_shards": len(files), "shard_MB": [round(s / 1e6, 2) for s in sizes],
        "row_groups": pq.ParquetFile(files[0]).metadata.num_row_groups,
        "bytes_per_image": round(info["splits"]["train"]["bytes"] / info["splits"]["train"]["rows"]),
        "raw_read_MB_per_s": round(raw / 1e6 / raw_s, 1),
        "reader": reader,
        "cpus": os.cpu_count(), "load_average_before": round(load0, 2),
        "images_per_s_single_process": round(one, 1), "images_per_cpu_second_single_process": round(one_cpu, 1),
        "images_per_s_2_workers": round(two, 1),
        "needed_now (3 x 19 img/s)": need_now, "needed_target (3 x 100 img/s)": need_target,
        "ok_now": one >= need_now, "ok_target_single": one >= need_target, "ok_target_2_workers": two >= need_target,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
