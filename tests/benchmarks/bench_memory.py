"""Peak memory of `mesodata build` does not grow with the number of videos.

Builds a DFDC-layout data root of N and 10×N real-footage videos (copies of the embedded sample's
clips), runs `mesodata build` on each in a subprocess, and samples the resident memory of the whole
process tree (client + workers) every 50 ms. Target: peak(10×N) < 1.5 × peak(N).

    python tests/benchmarks/bench_memory.py [--videos 20] [--frames 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from mesodata.pipeline.sample import write_sample


def make_root(sample: Path, root: Path, n: int) -> None:
    clips = sorted(p for p in (sample / "FaceForensics++").rglob("*.mp4") if p.stat().st_size > 0)
    part = root / "DFDC/dfdc_train_part_0"
    part.mkdir(parents=True)
    meta = {}
    for i in range(n):
        name = f"{i:010d}".translate(str.maketrans("0123456789", "abcdefghij")) + ".mp4"
        shutil.copyfile(clips[i % len(clips)], part / name)
        meta[name] = {"label": "FAKE" if "manipulated" in str(clips[i % len(clips)]) else "REAL", "split": "train"}
    (part / "metadata.json").write_text(json.dumps(meta))


def peak_rss(cmd: list[str]) -> tuple[float, float]:
    """(peak MiB of the process tree, wall seconds)."""
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    if proc.returncode:
        raise SystemExit(f"build failed: {' '.join(cmd)}")
    return peak / 2**20, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_sample(tmp / "sample")
        rows = []
        for n in (args.videos, 10 * args.videos):
            make_root(tmp / "sample", tmp / f"data{n}", n)
            cmd = [sys.executable, "-m", "mesodata.pipeline.cli", "build", "--sources", "dfdc", "--data-root",
                   str(tmp / f"data{n}"), "--work", str(tmp / f"work{n}"), "--frames", str(args.frames),
                   "--workers", str(args.workers)]
            mib, secs = peak_rss(cmd)
            rows.append((n, mib, secs))
            print(f"{n:>5} videos: peak RSS {mib:7.1f} MiB (client + workers), {secs:6.1f} s", flush=True)
        ratio = rows[1][1] / rows[0][1]
        print(f"peak RSS ratio 10x videos / 1x: {ratio:.2f} (target < 1.5)")


if __name__ == "__main__":
    main()
