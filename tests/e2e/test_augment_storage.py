"""`--augment-storage on-read`: train copies stored as parameters only, made again when read.

The same upstream tables (real face crops, tests/e2e/test_shards.py's fixture with
tests/e2e/test_export.py's three sources) are split twice, materialized and on-read; every row's
decoded image, every exported file and what plain Parquet readers see are compared.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from torch.utils.data import DataLoader

from mesodata.detector.data import RowFilter, ShardDataset
from mesodata.pipeline import augment, cells
from mesodata.pipeline.runner import Work
from mesodata.pipeline.stages import export, shards
from tests.e2e.test_export import VIDEOS
from tests.e2e.test_shards import PARAMS, build_upstream

SPLITS = ("train", "val", "test", "test-perturbed")


def _make(root: Path, storage: str) -> Work:
    work = build_upstream(root, VIDEOS)
    pq.write_table(pa.table({
        "video_id": [v[0] for v in VIDEOS], "source": [v[1] for v in VIDEOS],
        "compression": [("c23" if v[1] == "ff++" else None) for v in VIDEOS]}), work.path("manifest.parquet"))
    shards.run(work, {**PARAMS, "perturb_test": True, "augment_storage": storage}, workers=1)
    return work


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(materialized work dir, on-read work dir) of the same inputs and parameters."""
    root = tmp_path_factory.mktemp("storage")
    return _make(root / "materialized", "materialized"), _make(root / "on-read", "on-read")


def _decoded(work: Work, split: str, augmentations=None, num_workers: int = 0) -> dict[tuple, np.ndarray]:
    """Every row of `split` through the PyTorch reader: (video, frame, augmentation) -> CHW floats."""
    ds = ShardDataset(shards.shard_files(work, split), RowFilter(split=split, augmentations=augmentations))
    out = {}
    for b in DataLoader(ds, batch_size=16, num_workers=num_workers):
        for vid, frame, aug, img in zip(b["video_id"], b["frame_index"].tolist(), b["augmentation"], b["image"]):
            key = (vid, frame, aug)
            assert key not in out, key
            out[key] = img.numpy()
    return out


def test_the_reader_gives_every_row_the_same_image_both_ways(both):
    mat, onr = both
    for split in SPLITS:
        a, b = _decoded(mat, split), _decoded(onr, split, num_workers=2 if split == "train" else 0)
        assert a and a.keys() == b.keys(), split
        for key in a:
            assert np.array_equal(a[key], b[key]), (split, key)
        if split == "train":  # every transform of the paper preset occurs, made on read
            assert {k[2] for k in b} == {"none", *(s["name"] for s in augment.load_preset("paper")["train"])}


def test_a_filter_without_the_originals_still_makes_the_copies(both):
    mat, onr = both
    a, b = _decoded(mat, "train", ("blur15", "rotate45")), _decoded(onr, "train", ("blur15", "rotate45"))
    assert a.keys() == b.keys() and {k[2] for k in a} == {"blur15", "rotate45"}
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _rows(work: Work, split: str) -> dict[tuple, dict]:
    t = shards.read(work, split)
    return {(r["video_id"], r["frame_index"], r["augmentation"]): r for r in t.to_pylist()}


def test_on_read_rows_metadata_and_layout(both):
    mat, onr = both
    for split in SPLITS:
        a, b = _rows(mat, split), _rows(onr, split)
        assert a.keys() == b.keys()
        for key, ra in a.items():
            rb = b[key]
            assert {k: v for k, v in ra.items() if k != "image"} == {k: v for k, v in rb.items() if k != "image"}
            if split == "train" and key[2] != "none":
                assert rb["image"] is None  # a copy carries no bytes: no reader can mistake it for one
            else:
                assert rb["image"] == ra["image"]
    for f in shards.shard_files(onr, "train"):
        pf = pq.ParquetFile(f)
        info = shards.storage_info(pf.schema_arrow.metadata)
        assert info["augment_storage"] == "on-read"
        assert set(info["augmentations"]) == {s["name"] for s in augment.load_preset("paper")["train"]}
        for g in range(pf.num_row_groups):  # whole families in every row group
            t = pf.read_row_group(g, columns=["video_id", "frame_index", "augmentation"])
            fam = Counter(zip(t["video_id"].to_pylist(), t["frame_index"].to_pylist()))
            assert set(fam.values()) == {9}
            assert t.num_rows <= PARAMS["row_group_rows"] * 9
    for split in ("val", "test", "test-perturbed"):  # never stored on read: no originals to make them from
        assert all(shards.storage_info(pq.read_schema(f).metadata) is None for f in shards.shard_files(onr, split))
    assert all(shards.storage_info(pq.read_schema(f).metadata) is None for f in shards.shard_files(mat, "train"))


def test_train_costs_about_one_image_per_crop(both):
    mat, onr = both
    size = {w: sum(f.stat().st_size for f in shards.shard_files(w, "train")) for w in both}
    ratio = size[onr] / size[mat]
    assert ratio < 0.25, ratio  # ~1/9 of the image bytes, plus each row's small columns
    info = json.loads(onr.path(shards.INFO).read_text())
    assert info["params"]["augment_storage"] == "on-read"
    assert info["splits"]["train"]["bytes"] == size[onr]


def test_plain_readers_see_null_images_for_copies_and_the_card_says_so(both):
    import pandas as pd

    _, onr = both
    df = pd.read_parquet(onr.path("shards", "data", "train"))
    copies = df["augmentation"] != "none"
    assert copies.sum() == 8 * (~copies).sum()
    assert df.loc[copies, "image"].isna().all() and df.loc[~copies, "image"].notna().all()
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("parquet", data_files=[str(f) for f in shards.shard_files(onr, "train")],
                               split="train", cache_dir=str(onr.path(".hf-cache")))
    seen = Counter((r["augmentation"] == "none", r["image"] is None) for r in ds)
    assert set(seen) == {(True, False), (False, True)}  # originals decode, copies are None
    card = onr.path(shards.CARD).read_text()
    assert "Augmentation storage: on-read" in card and "`image` is **null**" in card
    assert "Augmentation storage" not in both[0].path(shards.CARD).read_text()


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != export.MARKER}  # the marker names the work dir


@pytest.mark.parametrize("fmt", export.FORMATS)
def test_every_exported_file_is_the_same_both_ways(both, tmp_path, fmt):
    outs = [tmp_path / f"{fmt}-{i}" for i in range(2)]
    for work, out in zip(both, outs):
        export.run(work, fmt, out, workers=1)
    a, b = _files(outs[0]), _files(outs[1])
    assert len([f for f in a if f.endswith(".png")]) > 20
    assert a == b


def test_replay_refuses_parameters_it_does_not_draw(both):
    _, onr = both
    f = shards.shard_files(onr, "train")[0]
    t = pq.read_table(f).to_pylist()
    specs = shards.storage_info(pq.read_schema(f).metadata)["augmentations"]
    orig = {(r["video_id"], r["frame_index"]): r["image"]["bytes"] for r in t if r["augmentation"] == "none"}
    row = next(r for r in t if r["augmentation"] == "rotate90")
    rgb = cells.decode(orig[(row["video_id"], row["frame_index"])])
    params = json.loads(row["aug_params"])
    assert augment.replay(rgb, specs["rotate90"], row["aug_params"]).shape == rgb.shape
    params["angle"] = -params["angle"]
    with pytest.raises(ValueError, match="another preset"):
        augment.replay(rgb, specs["rotate90"], json.dumps(params))


def test_the_option_is_checked(tmp_path):
    from mesodata.pipeline.cli.split import split
    from mesodata.pipeline.errors import UserError

    r = CliRunner().invoke(split, ["--work", str(tmp_path), "--augment-storage", "lazy"])
    assert r.exit_code == 2 and "on-read" in r.output
    with pytest.raises(UserError, match="augment_storage"):
        shards.plan(build_upstream(tmp_path / "w"), {**PARAMS, "augment_storage": "lazy"})


def test_a_copy_without_image_or_preset_is_an_error_not_a_wrong_image(both, tmp_path):
    """A train file whose on-read metadata was lost (e.g. rewritten by another tool) fails loudly."""
    _, onr = both
    f = shards.shard_files(onr, "train")[0]
    t = pq.read_table(f)
    stripped = tmp_path / "part-00000.parquet"
    meta = {k: v for k, v in t.schema.metadata.items() if k != shards.STORAGE_KEY}
    pq.write_table(t.replace_schema_metadata(meta), stripped)
    ds = ShardDataset([stripped], RowFilter(augmentations=None))
    with pytest.raises(ValueError, match="has no image"):
        list(ds)
    assert len(list(ShardDataset([stripped]))) == t.num_rows // 9  # the originals still read
