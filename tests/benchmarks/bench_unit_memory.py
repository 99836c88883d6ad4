"""Benchmark: what the client holds per unit while a stage runs (issue 18: memory at 120k videos).

    python tests/benchmarks/bench_unit_memory.py WORK

WORK: a work dir with a manifest (e.g. one of bench_scale.py's count runs). Builds, for every
manifest video, what `run_stage` keeps for the faces stage's map, one kind at a time, and prints
the RSS each adds (after a gc): the plan's row dict, the Unit, the job tuple with its part path,
and the summary a worker sends back (shaped as `_run_unit` returns it).
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import psutil
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mesodata.pipeline.runner import Unit, part_name  # noqa: E402
from mesodata.pipeline.stages import faces  # noqa: E402


def rss_mib() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    work = Path(sys.argv[1])
    table = pq.read_table(work / "manifest.parquet")
    n = table.num_rows
    steps, before = [], rss_mib()
    rows = table.select(faces.PLAN_COLUMNS).to_pylist()
    steps.append(("plan row (dict)", rss_mib()))
    units = [Unit(faces._unit_key(m), {"row": m, "path": "/data/" + m["path"], "params": {}}) for m in rows]
    steps.append(("Unit (key, payload)", rss_mib()))
    jobs = [(None, u, work / "faces" / part_name(u.key), None) for u in units]
    steps.append(("job (with its part's Path)", rss_mib()))
    results = [{"key": u.key, "skipped": True, "rows": 32, "status": {"face": 30, "no_face": 2},
                "file": {"sha256": "0" * 64, "bytes": 2_500_000, "rows": 32}} for u in units]
    steps.append(("summary from the worker", rss_mib()))
    print(f"{n:,} units\n\n| held per unit | MiB | bytes per unit |\n|---|---|---|")
    for name, after in steps:
        print(f"| {name} | {after - before:.0f} | {(after - before) * 2**20 / n:.0f} |")
        before = after
    del rows, units, jobs, results


if __name__ == "__main__":
    main()
