"""Build throughput with 1 and 2 workers, on joblib processes and on a local Dask cluster.

Builds a DFDC-layout data root of N real-footage videos (copies of the sample's clips) and times a
fresh `mesodata build` (manifest + faces + dedupe) for each backend and worker count, all in one run.

    python tests/benchmarks/bench_backends.py [--videos 60] [--frames 16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_memory import make_root  # noqa: E402

from pipeline.sample import write_sample  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=60)
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_sample(tmp / "sample")
        make_root(tmp / "sample", tmp / "data", args.videos)
        print(f"{args.videos} videos, {args.frames} frames each, {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f}")
        print("| backend | workers | build s | videos/s | speed-up vs 1 worker |\n|---|---|---|---|---|")
        for backend in ("local", "dask"):
            base = None
            for workers in (1, 2):
                work = tmp / f"work-{backend}-{workers}"
                cmd = [sys.executable, "-m", "pipeline.cli", "build", "--sources", "dfdc", "--data-root",
                       str(tmp / "data"), "--work", str(work), "--frames", str(args.frames),
                       "--workers", str(workers), "--backend", backend]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                secs = time.perf_counter() - t0
                base = base or secs
                print(f"| {backend} | {workers} | {secs:.1f} | {args.videos / secs:.2f} | {base / secs:.2f}x |",
                      flush=True)


if __name__ == "__main__":
    main()
