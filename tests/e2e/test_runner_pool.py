"""The runner's worker pool leaves joblib usable in the same process: a library that calls
joblib.Parallel after a build (scikit-learn's n_jobs, a notebook's own loop) must still work."""

from __future__ import annotations

import pyarrow as pa
from joblib import Parallel, delayed

from mesodata.pipeline.runner import Unit, map_units


def square(x: int) -> pa.Table:
    return pa.table({"x": [x * x]})


def test_joblib_parallel_works_after_a_pooled_map(tmp_path):
    results = map_units(square, [Unit(f"u{i}", i) for i in range(4)], tmp_path, artifact=None, workers=2,
                        desc="squares")
    assert sorted(r["rows"] for r in results) == [1, 1, 1, 1]
    assert Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
