"""How the Dask backend carries many units: wall time per unit and the scheduler's memory.

The full DFDC release is ~119,000 videos, one faces unit each. This runs N tiny units (each writes
a one-row Parquet part, as a real unit does, through `runner.map_units`) on a local Dask cluster of
`--workers` single-threaded processes, and samples memory every 50 ms: the client process (which,
for a LocalCluster, also hosts the scheduler) and the workers. The per-unit figure is mesodata's and
Dask's overhead, the floor under any real unit.

    python tests/benchmarks/bench_dask_units.py --units 1000,10000,120000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa

from mesodata.pipeline.runner import DaskExecutor, Unit, map_units


def tiny_unit(payload: int) -> pa.Table:
    return pa.table({"unit": [payload]})


class MemorySampler:
    """Peak RSS of this process (client + scheduler) and of its child processes (workers)."""

    def __init__(self, every_s: float = 0.05):
        self.every_s, self.client_peak, self.workers_peak = every_s, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.client_peak = max(self.client_peak, me.memory_info().rss)
            workers = 0
            for child in me.children(recursive=True):
                try:
                    workers += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.workers_peak = max(self.workers_peak, workers)
            self._stop.wait(self.every_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(n: int, workers: int) -> dict:
    units = [Unit(f"video-{i:06d}", i) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        parts = Path(tmp)
        executor = DaskExecutor(workers)
        try:
            with MemorySampler() as mem:
                start_rss = psutil.Process().memory_info().rss
                t0 = time.perf_counter()
                results = map_units(tiny_unit, units, parts, artifact=None, workers=workers,
                                    desc=f"{n} units", executor=executor)
                wall = time.perf_counter() - t0
        finally:
            executor.close()
        assert len(results) == n and len(list(parts.glob("*.parquet"))) == n
    mib = 1 << 20
    return {"units": n, "workers": workers, "wall_s": round(wall, 1), "ms_per_unit": round(1000 * wall / n, 2),
            "units_per_s": round(n / wall, 1), "client_scheduler_start_mib": round(start_rss / mib),
            "client_scheduler_peak_mib": round(mem.client_peak / mib),
            "workers_peak_mib": round(mem.workers_peak / mib)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", default="1000,10000,120000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.units.split(",")):
        rows.append(run(n, args.workers))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| units | workers | wall | ms/unit | units/s | client+scheduler peak | workers peak |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['units']:,} | {r['workers']} | {r['wall_s']} s | {r['ms_per_unit']} | {r['units_per_s']} | "
              f"{r['client_scheduler_peak_mib']} MiB | {r['workers_peak_mib']} MiB |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
