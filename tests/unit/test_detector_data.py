"""The shard reader: every selected row exactly once across workers and ranks, filters, decoding."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from mesodata.detector.data import RowFilter, ShardDataset, require_shards, shard_files
from mesodata.pipeline import cells
from tests.fixtures.samples import write_sample_shards
from mesodata.pipeline.errors import UserError


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    # small row groups and files so there are many (file, row group) units to share out
    write_sample_shards(root, videos={"train": 4, "val": 1, "test": 2}, frames=5,
                        rows_per_group=7, rows_per_file=20)
    return root


def _keys(batches) -> list[tuple[str, int]]:
    out = []
    for b in batches:
        out += list(zip(b["video_id"], b["frame_index"].tolist()))
    return out


def _all_keys(files) -> list[tuple[str, int]]:
    keys = []
    for f in files:
        t = pq.read_table(f, columns=["video_id", "frame_index"])
        keys += list(zip(t["video_id"].to_pylist(), t["frame_index"].to_pylist()))
    return keys


@pytest.mark.parametrize("shuffle", [False, True])
def test_workers_see_each_row_exactly_once(work, shuffle):
    files = shard_files(work, "train")
    assert sum(pq.ParquetFile(f).num_row_groups for f in files) >= 6
    ds = ShardDataset(files, RowFilter(split="train"), shuffle=shuffle, shuffle_buffer=5, seed=3)
    keys = _keys(DataLoader(ds, batch_size=4, num_workers=3))  # more workers than cores on purpose
    expected = _all_keys(files)
    assert Counter(keys) == Counter(expected)
    assert len(keys) == len(ds) == len(expected)


def test_ranks_partition_the_rows(work):
    files = shard_files(work, "train")
    seen = []
    for rank in range(2):
        ds = ShardDataset(files, RowFilter(split="train"), rank=rank, world_size=2)
        seen.append(_keys(DataLoader(ds, batch_size=8, num_workers=2)))
    assert not set(seen[0]) & set(seen[1])
    assert Counter(seen[0] + seen[1]) == Counter(_all_keys(files))


def test_shuffle_is_seeded_and_changes_with_epoch(work):
    files = shard_files(work, "train")

    def order(seed, epoch):
        ds = ShardDataset(files, RowFilter(split="train"), shuffle=True, shuffle_buffer=8, seed=seed)
        ds.set_epoch(epoch)
        return _keys(DataLoader(ds, batch_size=8))

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != _keys(DataLoader(ShardDataset(files, RowFilter(split="train")), batch_size=8))


def test_filters_by_source_and_augmentation(work):
    files = shard_files(work, "test-perturbed")
    ds = ShardDataset(files, RowFilter(split="test-perturbed", sources=("srcA",), augmentations=("jpeg",)))
    rows = list(ds)
    assert rows and len(rows) == len(ds)
    assert {r["source"] for r in rows} == {"srcA"}
    assert {r["augmentation"] for r in rows} == {"jpeg"}
    # the default filter keeps originals only, and there are none in test-perturbed
    assert len(ShardDataset(files)) == 0
    assert len(ShardDataset(files, RowFilter(augmentations=None))) == sum(
        pq.read_metadata(f).num_rows for f in files)


def test_images_decode_to_float_chw_in_unit_range(work):
    row = next(iter(ShardDataset(shard_files(work, "val"), RowFilter(split="val"))))
    x = row["image"]
    assert x.dtype == torch.float32 and x.shape == (3, 256, 256)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.05
    assert row["label"] in (0, 1)


def test_decode_rejects_garbage_and_resizes_other_sizes():
    import cv2

    with pytest.raises(ValueError, match="not a decodable image"):
        cells.decode(b"not an image at all", 256)
    png = cv2.imencode(".png", np.full((100, 80, 3), 200, np.uint8))[1].tobytes()
    assert cells.decode(png, 256).shape == (256, 256, 3)


def test_missing_shards_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run `mesodata split` first"):
        require_shards(tmp_path, "train")
