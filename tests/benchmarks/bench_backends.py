"""Build throughput with 1 and 2 workers, on joblib processes and on a local Dask cluster, with the
data and work dir on local disk and (--s3) on an S3-compatible server on loopback.

Builds a DFDC-layout data root of N real-footage videos (copies of the sample's clips) and times a
fresh `mesodata build` (manifest + faces + dedupe) for each storage, backend and worker count, all
in one run. The S3 rows use moto's server, so they measure mesodata's own cost of a store (a copy
of each video, an upload per part, no listing cache), not a real network.

    python tests/benchmarks/bench_backends.py [--videos 60] [--frames 16] [--s3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_memory import make_root  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[2]))
from tests.fixtures.s3server import moto_server, s3_environment  # noqa: E402

from mesodata.pipeline.sample import write_sample  # noqa: E402


def build_seconds(data: str, work: str, frames: int, workers: int, backend: str) -> float:
    cmd = [sys.executable, "-m", "mesodata.pipeline.cli", "build", "--sources", "dfdc", "--data-root", data,
           "--work", work, "--frames", str(frames), "--workers", str(workers), "--backend", backend]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=60)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--s3", action="store_true", help="also with data and work dir on a loopback S3 server")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        write_sample(tmp / "sample")
        make_root(tmp / "sample", tmp / "data", args.videos)
        places = {"local disk": (str(tmp / "data"), lambda name: str(tmp / name))}
        if args.s3:
            fs = stack.enter_context(s3_environment(stack.enter_context(moto_server())))
            fs.mkdir("data")
            fs.mkdir("work")
            fs.put(str(tmp / "data"), "data/root", recursive=True)
            places["S3 (moto, loopback)"] = ("s3://data/root", lambda name: f"s3://work/{name}")
        print(f"{args.videos} videos, {args.frames} frames each, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")
        print("| storage | backend | workers | build s | videos/s | speed-up vs 1 worker |\n|---|---|---|---|---|---|")
        for place, (data, work_for) in places.items():
            for backend in ("local", "dask"):
                base = None
                for workers in (1, 2):
                    secs = build_seconds(data, work_for(f"work-{backend}-{workers}"), args.frames, workers, backend)
                    base = base or secs
                    print(f"| {place} | {backend} | {workers} | {secs:.1f} | {args.videos / secs:.2f} | "
                          f"{base / secs:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
