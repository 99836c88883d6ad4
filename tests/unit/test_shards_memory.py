"""A shard worker's memory is one row group's, not one shard's (pipeline/stages/shards.py).

Shards grow up to --shard-size (256 MB), so a worker that builds its shard whole (every image's
bytes, then the Arrow table) grows with the benchmark until that size. The worker below writes a
shard of 16 row groups; its peak Arrow allocation and its peak of Python allocations (the images'
bytes) must stay within a few row groups' bytes."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mesodata.pipeline import augment, cells
from mesodata.pipeline.shard_rows import ShardRows
from mesodata.pipeline.stages import shards

N_FILES, PER_FILE, ROW_GROUP = 32, 4, 8  # 128 originals in faces files of 4 rows; 16 row groups
SIDE = 128


def _noise_png(rng: np.random.Generator) -> bytes:
    """A crop that does not compress: its bytes are what a row group holds."""
    return cells.encode_png(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> pd.DataFrame:
    """Faces files of PER_FILE crops each, and the planned originals that point at them."""
    folder, rng, recs = tmp_path_factory.mktemp("faces"), np.random.default_rng(0), []
    for k in range(N_FILES):
        vid = f"src/video{k:03d}"
        f = folder / f"part-{k:03d}.parquet"
        pq.write_table(pa.table({
            "video_id": [vid] * PER_FILE, "frame_index": pa.array(range(PER_FILE), pa.int64()),
            "image": [cells.cell(_noise_png(rng), None) for _ in range(PER_FILE)]}), f)
        recs += [(str(f), i, vid, i, "src", k % 2, "m", f"g{k}") for i in range(PER_FILE)]
    return pd.DataFrame(recs, columns=["_file", "_row", "video_id", "frame_index", "source", "label", "method",
                                       "group"])


def _payload(tmp_path, originals: pd.DataFrame, copies: list) -> dict:
    n = len(originals) * len(copies)
    order = np.random.default_rng(1).permutation(n)  # rows mixed over the whole shard, as planned
    specs = {s["name"]: s for s in augment.load_preset("paper")["train"]}
    rel = "shards/data/train/part-00000.parquet"
    return {"out": tmp_path / rel, "rel": rel, "split": "train",
            "rows": ShardRows(originals, order // len(copies), order % len(copies), copies),
            "specs": {a: specs[a] for a in copies if a is not None}, "seed": 0, "row_group_rows": ROW_GROUP,
            "on_read": False, "png_compression": 1}


_POOLS = []  # a proxy pool must outlive every buffer it allocated (some are freed after the test)


def _peaks(payload: dict) -> tuple[int, int, pa.Table]:
    """(peak Arrow bytes, peak Python-traced bytes) while the worker writes the shard, and its part."""
    previous = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(previous)  # counts only what is allocated from now on
    _POOLS.append(pool)
    pa.set_memory_pool(pool)
    tracemalloc.start()
    try:
        part = shards._write_shard(payload)
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(previous)
    return pool.max_memory(), python_peak, part


@pytest.mark.parametrize("copies", [[None], [None, "rotate90"]], ids=["originals", "with copies"])
def test_a_shard_is_written_in_one_row_groups_memory(tmp_path, originals, copies):
    shards._write_shard(_payload(tmp_path / "warm", originals.head(1), copies))  # lazy imports, unmeasured
    payload = _payload(tmp_path, originals, copies)
    arrow_peak, python_peak, part = _peaks(payload)

    written = pq.ParquetFile(payload["out"])
    n_rows = len(originals) * len(copies)
    assert [written.metadata.row_group(g).num_rows for g in range(written.num_row_groups)] == \
        [ROW_GROUP] * (n_rows // ROW_GROUP)
    assert part["shard_rows"][0].as_py() == n_rows
    image_bytes = sum(written.metadata.row_group(g).column(0).total_uncompressed_size
                      for g in range(written.num_row_groups))
    row_group_bytes = image_bytes / written.num_row_groups
    print(f"{copies}: Arrow peak {arrow_peak} B, Python peak {python_peak} B, a row group's images {row_group_bytes:.0f} B")
    # the whole shard's images would be 16 row groups; a few are the row group being built, the
    # writer's buffer of it and the faces file being read
    assert arrow_peak < 4 * row_group_bytes, (arrow_peak, row_group_bytes)
    assert python_peak < 4 * row_group_bytes, (python_peak, row_group_bytes)
