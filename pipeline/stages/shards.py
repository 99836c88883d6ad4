"""Stage: the benchmark as Parquet shards, `WORK/shards/data/<split>/part-NNNNN.parquet`.

Rows shipped: face crops (faces status 'face') kept by dedupe, of videos the split assigned to
train, val or test. Train gets each original plus its augmented copies (the preset's `train`
list; the paper's eight by default); val and test stay clean; with `perturb_test`, the preset's
`perturb` copies of every test crop go to `test_perturbed/`.

`WORK/shards/` is a Hugging Face dataset repository as it stands: `README.md` (the data card, whose
YAML header lists the split files and the features, `label` a `ClassLabel` [real, fake]) and the
Parquet files under `data/`, one folder per split under its Hugging Face name (`train`,
`validation`, `test`, `test_perturbed`; the rows' `split` column keeps mesodata's names `train`,
`val`, `test`, `test-perturbed`). Uploading the folder publishes it; `pd.read_parquet(".../data")`,
pyarrow, polars and DuckDB read it as it is.

The plan comes first and is deterministic: videos (in chunks, when a video alone would outgrow
its share) are spread over a split's shards in a seeded order, largest first onto the lightest
shard, and the rows of each shard are put in a seeded order (so each row group mixes videos).
Then every shard is one runner unit that reads its crops, applies the transforms (each copy
seeded by the seed and its own id) and writes its file atomically, a row group at a time (so a
worker's memory is a row group's, not a shard's). The plan holds each shard's originals once and
two small ints per row (`shard_rows.ShardRows`), not a record per row. The same inputs give
byte-identical shards whatever the worker count; a killed run redoes only missing shards; a
finished one is a no-op.

Each file has the schema of `schemas/shards.yaml`, row groups of `row_group_rows` rows and the
Hugging Face feature metadata, so `datasets.load_dataset("parquet", ...)` decodes `image` and sees
`label` as a `ClassLabel`. `WORK/shards/dataset_info.json` and `README.md` give the counts, the
parameters and the upstream fingerprints.

`augment_storage` "on-read" stores each train crop once: its copies are rows with a null `image`
and their exact parameters in `aug_params`, each file's metadata holds the preset entries
(`STORAGE_KEY`), and each row group holds `row_group_rows` originals with all their copies, so
`detector.data.ShardDataset` makes every copy from the row group it reads, the very pixels of the
materialized copy. Plain Parquet readers see the copies' images as null (the card says so).

Version 1 wrote `WORK/shards/<split>/part-NNNNN.parquet` with `label` a plain int8; `run` migrates
such a finished work dir in place (the files are rewritten with the new metadata under `data/`,
no crop is decoded or augmented again) and says so.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .. import atomic, augment, cells, schema, storage
from ..errors import UserError
from ..runner import Output, Param, Stage, StageDef, StageRun, Unit, Work, check_params, run_stage
from ..shard_rows import ORIGINAL_COLUMNS, CropSpill, ShardRows

log = logging.getLogger("mesodata")

__all__ = ["STAGE", "run", "plan", "read", "shard_files", "hf_features", "hf_split", "DEFAULTS", "SPLITS", "FOLDERS",
           "STORAGES", "on_read_split", "storage_info"]

NAME = "shards"
VERSION = "2"  # 2: data/<Hugging Face split>/ layout, label a ClassLabel, full data card
UPSTREAM = ("faces", "dedupe", "split")
OUT_DIR = "shards"
INFO = f"{OUT_DIR}/dataset_info.json"
CARD = f"{OUT_DIR}/README.md"
REPORT = "reports/shards.json"  # the same as INFO, where every stage's report is
SPLITS = ("train", "val", "test")
PERTURBED = "test-perturbed"
DATA_DIR = f"{OUT_DIR}/data"
# mesodata's split name -> its folder under data/, the Hugging Face split name (\w+ only)
FOLDERS = {"train": "train", "val": "validation", "test": "test", PERTURBED: "test_perturbed"}
LABEL_NAMES = ("real", "fake")  # ClassLabel names: index 0 = real, 1 = fake, as the label column
STORAGES = ("materialized", "on-read")
# The Parquet schema metadata key of an on-read train shard: {"augment_storage": "on-read",
# "augmentations": {name: normalized preset entry}}, what a reader needs to make each copy again.
STORAGE_KEY = b"mesodata"
PARAMS: dict[str, Param] = {
    "shard_size": Param(256 * 1024 * 1024, int, 1),  # target bytes per shard file
    "augment": Param("paper"),                       # "paper", "none" or a YAML/JSON preset file
    "perturb_test": Param(False, bool),              # also write test-perturbed/
    "seed": Param(0, int, 0),
    "row_group_rows": Param(128, int, 1),            # rows per row group: what a reader holds at once
    "min_shards": Param(8, int, 1),                  # per split, when it has a row group's worth of rows per shard
    "png_compression": Param(1, int, 0, 9),          # zlib level of the augmented copies' PNGs (1: 2x faster than 3, +3% bytes)
    # materialized: every train copy's PNG is stored (~9x the originals' bytes); on-read: only the
    # originals' bytes, each copy a row with a null image and its exact parameters (STORAGE below)
    "augment_storage": Param("materialized", str, choices=STORAGES),
}
DEFAULTS: dict[str, Any] = {k: v.default for k, v in PARAMS.items()}
_FACE_COLUMNS = ["video_id", "frame_index", "status", "source", "label", "method", "group"]
_FALLBACK_ROW_BYTES = 120_000  # a 256x256 face PNG, when the faces files say nothing


def hf_features() -> dict:
    """The Hugging Face `Features` of a shard, as stored under the b"huggingface" schema key."""
    feats: dict[str, dict] = {}
    for f in schema.load(NAME):
        if f.name == "image":
            feats[f.name] = {"_type": "Image"}
        elif f.name == "label":
            feats[f.name] = {"names": list(LABEL_NAMES), "_type": "ClassLabel"}
        else:
            feats[f.name] = {"dtype": str(f.type), "_type": "Value"}
    return feats


def _hf_metadata() -> bytes:
    return json.dumps({"info": {"features": hf_features()}}, sort_keys=True).encode()


# --- parameters -------------------------------------------------------------------------------
def _check_params(params: dict) -> dict:
    return check_params(NAME, PARAMS, params)


def _identify(work: Work, p: dict) -> tuple[dict, dict]:
    """The fingerprint holds the preset's content, so an edited preset file redoes the shards."""
    preset = augment.load_preset(p["augment"])
    fp_params = {k: p[k] for k in DEFAULTS if k != "augment"}
    fp_params["augment"] = preset
    if p["augment_storage"] == "materialized":
        del fp_params["augment_storage"]  # today's shards keep their fingerprint: no needless rewrite
    return fp_params, {"preset": preset}


# --- reading the upstream tables -----------------------------------------------------------------
def _faces_files(work: Work) -> list[Path]:
    """The faces stage's Parquet parts, as its index lists them (faces/_index.json, in its order)."""
    index = work.path("faces", "_index.json")
    if not index.exists():
        raise UserError(f"no face crops in {work.root} (no {index}): run `mesodata build` first")
    try:
        files = [work.path("faces", e["part"]) for e in json.loads(index.read_text())["parts"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{index} is corrupt ({exc}): rerun `mesodata build`") from exc
    missing = [f for f in files if not f.exists()]
    if missing:
        raise UserError(f"face part {missing[0]} is missing: rerun `mesodata build` to redo it")
    if not files:
        raise UserError(f"no face crops under {work.path('faces')}: run `mesodata build` first")
    return files


def _image_bytes(pf: pq.ParquetFile) -> int:
    md, total = pf.metadata, 0
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        for c in range(group.num_columns):
            col = group.column(c)
            if col.path_in_schema == "image.bytes":
                total += col.total_uncompressed_size
    return total


_MERGE_EVERY = 1000  # faces files read before their tables are merged: apart, each costs ~10 KB


def _faces_rows(files: list[Path]):
    """The faces rows of every file (_FACE_COLUMNS, plus `_file` and `_row`: where each crop is) as
    a DataFrame, and the files' image bytes. One file is one video: its tables are merged as they
    come, so the plan does not grow by a table per video."""
    merged, pending, names, counts, image_bytes = [], [], [], [], 0
    for f in files:
        pf = storage.parquet_file(f)
        pending.append(pf.read(columns=[c for c in _FACE_COLUMNS if c in pf.schema_arrow.names]))
        names.append(str(f))
        counts.append(pending[-1].num_rows)
        image_bytes += _image_bytes(pf)
        if len(pending) == _MERGE_EVERY:
            merged.append(_merged(pending))
            pending = []
    faces = _merged(merged + pending).to_pandas()
    faces["_file"] = np.repeat(np.array(names, dtype=object), counts)
    faces["_row"] = np.arange(len(faces), dtype=np.int64) - np.repeat(np.cumsum([0, *counts[:-1]]), counts)
    return faces, image_bytes


def _merged(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="default").combine_chunks()


def _selection(work: Work):
    """Rows to ship (a DataFrame, one per original crop) and how many rows were left out, and why."""
    faces, image_bytes = _faces_rows(_faces_files(work))
    for path in ("dedupe.parquet", "split.parquet"):
        if not work.path(path).exists():
            raise UserError(f"no {path} in {work.root}: run `mesodata build` / `mesodata split` first")
    dedupe = storage.read_table(work.path("dedupe.parquet"), columns=["video_id", "frame_index", "kept"]).to_pandas()
    split_cols = ["video_id", "split"] + (["group"] if "group" not in faces.columns else [])
    splits = storage.read_table(work.path("split.parquet"), columns=split_cols).to_pandas()

    dropped: dict[str, int] = {}
    is_face = faces["status"] == "face"
    for status, n in faces.loc[~is_face, "status"].value_counts().sort_index().items():
        dropped[f"status {status}"] = int(n)
    rows = faces[is_face].astype({"frame_index": np.int64})  # null only on rows without a frame
    n_face_rows = len(rows)
    rows = rows.merge(dedupe, on=["video_id", "frame_index"], how="left", validate="one_to_one")
    no_dedupe = rows["kept"].isna()
    dropped["no dedupe row"] = int(no_dedupe.sum())
    rows = rows[~no_dedupe]
    kept = rows["kept"].astype(bool)
    dropped["duplicate (dedupe kept=false)"] = int((~kept).sum())
    rows = rows[kept].merge(splits, on="video_id", how="left", validate="many_to_one")
    no_split = rows["split"].isna()
    dropped["no split (video unassigned)"] = int(no_split.sum())
    rows = rows[~no_split]
    no_label = rows["label"].isna()
    dropped["no label"] = int(no_label.sum())
    rows = rows[~no_label]
    bad = sorted(set(rows["split"]) - set(SPLITS))
    if bad:
        raise UserError(f"split.parquet holds split {bad[0]!r}; expected one of {', '.join(SPLITS)}")
    if rows.empty:
        why = ", ".join(f"{k}: {v}" for k, v in dropped.items() if v) or "no rows"
        raise UserError(f"no face crops to ship: of {len(faces)} faces rows upstream none is a kept face "
                        f"of a video with a split ({why}); see reports/faces.json")
    rows = rows.sort_values(["video_id", "frame_index"], kind="stable").reset_index(drop=True)
    row_bytes = image_bytes / n_face_rows if n_face_rows and image_bytes else _FALLBACK_ROW_BYTES
    info = {"faces_rows": int(len(faces)), "selected": int(len(rows)), "dropped": dropped,
            "estimated_image_bytes": round(row_bytes)}
    return rows, info


# --- the plan ------------------------------------------------------------------------------------
def _spread(videos: list[tuple[str, int, int]], n_rows_per_orig: int, n_shards: int,
            rng: random.Random) -> list[list[tuple[int, int]]]:
    """Assign (video, start, stop) runs of originals to `n_shards` shards, in chunks: seeded order,
    largest first, lightest shard. Each shard gets a list of (start, stop) ranges."""
    total = sum(stop - start for _, start, stop in videos)
    chunk = max(1, math.ceil(total / n_shards / 2))
    chunks = [(i, min(i + chunk, stop)) for _, start, stop in videos for i in range(start, stop, chunk)]
    rng.shuffle(chunks)
    chunks.sort(key=lambda c: c[1] - c[0], reverse=True)  # stable: equal sizes keep the seeded order
    n_shards = min(n_shards, len(chunks))
    loads, shards = [0] * n_shards, [[] for _ in range(n_shards)]
    for c in chunks:
        k = min(range(n_shards), key=lambda i: (loads[i], i))
        shards[k].append(c)
        loads[k] += (c[1] - c[0]) * n_rows_per_orig
    return shards


def _video_runs(video_ids: np.ndarray) -> list[tuple[str, int, int]]:
    """(video, start, stop) of each video's run of rows (rows sorted by video), sorted by video."""
    if not len(video_ids):
        return []
    starts = np.flatnonzero(np.r_[True, video_ids[1:] != video_ids[:-1]])
    stops = np.r_[starts[1:], len(video_ids)]
    return sorted(zip(video_ids[starts].tolist(), starts.tolist(), stops.tolist()))


def plan(work: Work, params: dict) -> tuple[Stage, list[Unit], dict]:
    """Decide every shard's rows, in order, before anything is written: (stage, units, selection info)."""
    p = _check_params(params)
    fp_params, context = _identify(work, p)
    units, info = _plan_units(work, p, context["preset"])
    return Stage(NAME, VERSION, fp_params, UPSTREAM), units, info


def _plan_units(work: Work, p: dict, preset: dict) -> tuple[list[Unit], dict]:
    rows, info = _selection(work)
    specs = {s["name"]: s for s in preset["train"] + preset["perturb"]}
    layout = {"train": [None] + [s["name"] for s in preset["train"]], "val": [None], "test": [None]}
    if p["perturb_test"] and preset["perturb"]:
        layout[PERTURBED] = [s["name"] for s in preset["perturb"]]
    rows["label"] = rows["label"].astype(int)
    planned = rows[ORIGINAL_COLUMNS]  # what a worker needs to find and label each original
    units: list[Unit] = []
    for folder, copies in layout.items():
        source_split = "test" if folder == PERTURBED else folder
        idx = np.flatnonzero((rows["split"] == source_split).to_numpy())  # in video order
        if not len(idx):
            continue
        on_read = on_read_split(folder, p["augment_storage"]) and len(copies) > 1
        n_out = len(idx) * len(copies)
        n_stored = len(idx) if on_read else n_out  # rows whose image bytes are stored
        n_shards = max(1, math.ceil(n_stored * info["estimated_image_bytes"] / p["shard_size"]),
                       min(p["min_shards"], n_stored // p["row_group_rows"]))
        videos = _video_runs(rows["video_id"].to_numpy()[idx])
        shards = _spread(videos, len(copies), n_shards, random.Random(f"{p['seed']}:{folder}"))
        for k, ranges in enumerate(shards):
            originals = idx[np.concatenate([np.arange(a, b) for a, b in ranges])]
            rng = random.Random(f"{p['seed']}:{folder}:{k}")
            if on_read:
                order = _families_order(len(originals), len(copies), p["row_group_rows"], rng)
            else:
                order = _shuffled_order(len(originals), len(copies), rng)
            rel = f"{DATA_DIR}/{FOLDERS[folder]}/part-{k:05d}.parquet"
            units.append(Unit(rel, {
                "out": work.path(rel), "rel": rel, "split": folder,
                "rows": ShardRows(planned.iloc[originals], *order, copies),
                "specs": {a: specs[a] for a in copies if a is not None}, "seed": p["seed"],
                "row_group_rows": p["row_group_rows"] * (len(copies) if on_read else 1),
                "on_read": on_read, "png_compression": p["png_compression"]}))
    info["preset"] = preset
    info["params"] = p
    return units, info


def on_read_split(split: str, storage_mode: str) -> bool:
    """Whether `split`'s copies are stored as parameters only: train's, in on-read mode (test-perturbed
    holds no originals to make its copies from, so it is always materialized)."""
    return storage_mode == "on-read" and split == "train"


def _shuffled_order(n_originals: int, n_copies: int, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """Materialized row order: every original with each of its copies, all in one seeded order.
    (original, copy) index per row; shuffling indices gives the permutation shuffling the rows would."""
    perm = list(range(n_originals * n_copies))
    rng.shuffle(perm)
    return np.divmod(np.asarray(perm, np.int64), n_copies)


def _families_order(n_originals: int, n_copies: int, per_group: int,
                    rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """On-read row order: each row group holds `per_group` originals with all their copies, so a
    reader makes every copy from the row group it reads; originals and rows within a group in a
    seeded order. (original, copy) index per row."""
    originals = list(range(n_originals))
    rng.shuffle(originals)
    parts = []
    for g in range(0, n_originals, per_group):
        members = np.asarray(originals[g:g + per_group], np.int64)
        perm = list(range(len(members) * n_copies))
        rng.shuffle(perm)
        member, copy = np.divmod(np.asarray(perm, np.int64), n_copies)
        parts.append((members[member], copy))
    return np.concatenate([o for o, _ in parts]), np.concatenate([c for _, c in parts])


# --- one unit: one shard ---------------------------------------------------------------------------
def _spill_crops(planned: ShardRows, spill: CropSpill) -> None:
    """Read each original's crop once, faces row group by row group, check it is the crop planned
    and spill its bytes; keys are (faces file, row)."""
    need: dict[str, dict[int, tuple]] = defaultdict(dict)
    for f, i, vid, frame, *_ in planned.records():
        need[f][i] = (vid, frame)
    for f, wanted in need.items():
        pf = storage.parquet_file(f)
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        rows = np.array(sorted(wanted), np.int64)
        groups = np.searchsorted(starts, rows, side="right") - 1
        for g in np.unique(groups).tolist():
            t = pf.read_row_group(g, columns=["video_id", "frame_index", "image"])
            vids, frames, images = t["video_id"], t["frame_index"], t["image"]
            for i in rows[groups == g].tolist():
                j = i - int(starts[g])
                vid, frame = vids[j].as_py(), frames[j].as_py()
                if (vid, frame) != wanted[i]:
                    raise RuntimeError(f"{f} row {i} is {vid}#{frame}, expected {wanted[i][0]}#{wanted[i][1]}: "
                                       "the faces files changed during the run; rerun the split")
                image = images[j].as_py()
                if image is None or not image.get("bytes"):
                    raise RuntimeError(f"{vid} frame {frame} has status 'face' but no image in {f}")
                spill.add((f, i), image["bytes"], image.get("path"))
            del t, vids, frames, images  # before the next row group is read


def _decode_rgb(data: bytes, where: str) -> np.ndarray:
    try:
        return cells.decode(data)
    except ValueError:
        raise RuntimeError(f"cannot decode the crop of {where} ({len(data)} bytes)") from None


class _DecodedCrops:
    """Each original's pixels, decoded once and dropped after its last copy is made."""

    def __init__(self, planned: ShardRows):
        self._pixels: dict[tuple[str, int], np.ndarray] = {}
        self._remaining: dict[tuple[str, int], int] = defaultdict(int)
        recs = planned.records()
        for o, c in zip(planned.original.tolist(), planned.copy.tolist()):
            if planned.copies[c] is not None:
                self._remaining[recs[o][:2]] += 1

    def take(self, key: tuple[str, int], spill: CropSpill, where: str) -> np.ndarray:
        """The pixels of crop `key` for one more copy."""
        pixels = self._pixels.get(key)
        if pixels is None:
            pixels = self._pixels[key] = _decode_rgb(spill.data(key), where)
        self._remaining[key] -= 1
        if not self._remaining[key]:
            del self._pixels[key]
        return pixels


def _write_shard(payload: dict) -> pa.Table:
    """Materialize one planned shard, write it atomically, return its per-class counts (the runner's part).
    Row group by row group: a worker holds one row group's images (and the crops' bytes in a temp
    file), whatever the size of the shard."""
    planned: ShardRows = payload["rows"]
    decoded = None if payload["on_read"] else _DecodedCrops(planned)
    counts: dict[tuple, int] = defaultdict(int)
    extra = {STORAGE_KEY: _storage_metadata(payload["specs"])} if payload["on_read"] else {}
    with atomic.atomic_path(payload["out"]) as tmp, CropSpill(tmp.parent) as spill:
        _spill_crops(planned, spill)
        with _shard_writer(tmp, _shard_schema(extra)) as writer:
            for group in planned.row_groups(payload["row_group_rows"]):
                table = _row_group(group, payload, spill, decoded)
                writer.write_table(table, row_group_size=table.num_rows)
                _count_classes(counts, table)
        os.chmod(tmp, 0o644)  # a dataset others read (mkstemp makes 0600)
    return _shard_summary(payload["rel"], payload["split"], counts, len(planned), storage.size(payload["out"]))


def _row_group(group: list[tuple], payload: dict, spill: CropSpill, decoded: _DecodedCrops | None) -> pa.Table:
    """One row group's rows as a table of the shard schema: originals' bytes as stored, copies made."""
    specs = payload["specs"]
    cols: dict[str, list] = defaultdict(list)
    for (f, i, vid, frame, source, label, method, group_name), aug in group:
        key = (f, i)
        stem = f"{vid}/{frame:06d}"
        if aug is None:
            image = {"bytes": spill.data(key), "path": spill.path(key) or f"{stem}.png"}
            params = "{}"
        elif payload["on_read"]:  # no image: the exact parameters, from the crop's size alone
            image = None
            used = augment.params_for(specs[aug], augment.sample_seed(payload["seed"], vid, frame, aug),
                                      _crop_shape(spill.data(key), f"{vid}#{frame}"))
            params = json.dumps(used, sort_keys=True)
        else:
            pixels = decoded.take(key, spill, f"{vid}#{frame}")
            out, used = augment.apply(pixels, specs[aug], augment.sample_seed(payload["seed"], vid, frame, aug))
            image = cells.cell(cells.encode_png(out, cells.png_level(payload["png_compression"])), f"{stem}-{aug}.png")
            params = json.dumps(used, sort_keys=True)
        cols["image"].append(image)
        for name, v in (("label", label), ("source", source), ("method", method), ("video_id", vid),
                        ("frame_index", frame), ("split", payload["split"]), ("group", group_name),
                        ("augmentation", aug or "none"), ("aug_params", params)):
            cols[name].append(v)
    table = pa.table({f.name: pa.array(cols[f.name], f.type) for f in schema.load(NAME)})
    return schema.conform(table, NAME)


def _crop_shape(data: bytes, where: str) -> tuple[int, int]:
    try:
        return cells.image_shape(data)
    except ValueError:
        raise RuntimeError(f"cannot read the size of the crop of {where} ({len(data)} bytes)") from None


def _storage_metadata(specs: dict) -> bytes:
    return json.dumps({"augment_storage": "on-read", "augmentations": specs}, sort_keys=True).encode()


def storage_info(schema_metadata: dict | None) -> dict | None:
    """The on-read metadata of a shard file's schema ({"augment_storage", "augmentations"}), or None
    for a file whose every row carries its image (materialized, or a split never stored on read)."""
    raw = (schema_metadata or {}).get(STORAGE_KEY)
    return json.loads(raw) if raw else None


def _shard_schema(extra: dict | None = None) -> pa.Schema:
    """A shard file's Arrow schema: schemas/shards.yaml with the Hugging Face features in its metadata."""
    target = schema.load(NAME)
    return target.with_metadata({**(target.metadata or {}), b"huggingface": _hf_metadata(), **(extra or {})})


def _shard_writer(path, arrow_schema: pa.Schema) -> pq.ParquetWriter:
    """A shard file's writer: small columns zstd with dictionaries and statistics, images stored as is."""
    small = [c for c in arrow_schema.names if c != "image"] + ["image.path"]
    return pq.ParquetWriter(path, arrow_schema, compression={**{c: "zstd" for c in small}, "image.bytes": "none"},
                            use_dictionary=small, write_statistics=small)


def _write_table(table: pa.Table, out, row_group_rows: int, extra: dict | None = None) -> None:
    """One shard file from a whole table, atomically (a version-1 shard migrated)."""
    arrow_schema = _shard_schema(extra)
    with atomic.atomic_path(out) as tmp:
        with _shard_writer(tmp, arrow_schema) as writer:
            writer.write_table(table.replace_schema_metadata(arrow_schema.metadata), row_group_size=row_group_rows)
        os.chmod(tmp, 0o644)  # a dataset others read (mkstemp makes 0600)


def _count_classes(counts: dict[tuple, int], table: pa.Table) -> None:
    """Add a table's rows per (source, label, method, augmentation) to `counts`."""
    for key in zip(table["source"].to_pylist(), table["label"].to_pylist(), table["method"].to_pylist(),
                   table["augmentation"].to_pylist()):
        counts[key] += 1


def _shard_summary(rel: str, split: str, counts: dict[tuple, int], n_rows: int, size: int) -> pa.Table:
    """A shard's rows per (source, label, method, augmentation): what the data card is made from."""
    items = sorted(counts.items())
    return pa.table({
        "shard": [rel] * len(items), "split": [split] * len(items),
        "source": [k[0] for k, _ in items], "label": pa.array([k[1] for k, _ in items], pa.int8()),
        "method": [k[2] for k, _ in items], "augmentation": [k[3] for k, _ in items],
        "rows": pa.array([n for _, n in items], pa.int64()),
        "shard_rows": pa.array([n_rows] * len(items), pa.int64()),
        "shard_bytes": pa.array([size] * len(items), pa.int64()),
    })


# --- the stage -------------------------------------------------------------------------------------
def _plan(run: StageRun) -> list[Unit]:
    units, run.context["info"] = _plan_units(run.work, run.params, run.context["preset"])
    if _old_layout(run.work):
        log.warning("shards: %s holds shards in the layout of shards version 1 (<split>/part-*.parquet) "
                    "made with other inputs or parameters: replacing them with new shards under data/",
                    run.work.path(OUT_DIR))
    return units


def _before_map(run: StageRun) -> None:
    """Temp files of a killed run go; a part whose shard has gone would be skipped: drop it."""
    work = run.work
    for tmp in work.path(DATA_DIR).glob("*/.part-*.tmp"):  # left by a killed run (one build per work dir)
        tmp.unlink(missing_ok=True)
    for key in run.parts.keys:  # a unit's key is its shard's path in the work dir
        if not work.path(key).exists():
            run.parts.drop(key)


def _combine(run: StageRun) -> Output:
    """dataset_info.json (the stage's report too) and the data card, from the shards' summaries."""
    work, keys = run.work, run.parts.keys
    missing = [k for k in keys if not work.path(k).exists()]
    if missing:
        raise RuntimeError(f"shards: {len(missing)} shard(s) missing after the run, e.g. {missing[0]}")
    dataset_info = _dataset_info(work, run.stage, run.fingerprint, run.context["info"], run.parts.table())
    atomic.write_json(work.path(INFO), dataset_info)
    atomic.write_bytes(work.path(CARD), _card(dataset_info).encode())
    counts = {"rows": dataset_info["rows"], "shards": len(keys), **run.parts.summary,
              **{f"rows_{s}": v["rows"] for s, v in dataset_info["splits"].items()}}
    return Output(report=dataset_info, counts=counts, files=[*keys, INFO, CARD])


def run(work: Work, params: dict, *, workers: int = 1, executor=None) -> dict:
    """Write `WORK/shards/` from the faces, dedupe and split tables; return the stage state.

    params: shard_size (bytes), augment ("paper", "none" or a preset file), perturb_test (bool),
    seed (int); optional row_group_rows, min_shards, png_compression (see DEFAULTS).
    """
    return run_stage(work, STAGE, params, workers=workers, executor=executor)


# --- migrating a version-1 work dir ----------------------------------------------------------------
_V1_FOLDERS = ("train", "val", "test", PERTURBED)


def _old_layout(work: Work) -> list:
    return [f for folder in _V1_FOLDERS for f in sorted(work.path(OUT_DIR, folder).glob("part-*.parquet"))]


def _migrate_v1(run: StageRun) -> Output | None:
    """A finished version-1 run with the same parameters and upstream: move its shards to
    data/<split>/ with the ClassLabel metadata (no crop decoded again) and write the new card.
    None when there is nothing of the kind to migrate."""
    work, stage = run.work, run.stage
    st = work.state(NAME)
    if not st or st.get("version") != "1" or st.get("params") != stage.params:
        return None
    old_stage = Stage(NAME, "1", st["params"], tuple(st.get("upstream", UPSTREAM)))
    if not work.is_fresh(old_stage):
        return None
    try:
        old_info = json.loads(work.path(INFO).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    files = [rel for rel in st["outputs"] if rel.endswith(".parquet") and Path(rel).parts[1] in _V1_FOLDERS]
    if not files:
        return None
    log.warning("shards: migrating %s in place from the layout of shards version 1 (<split>/part-*.parquet, "
                "label a plain int8) to a Hugging Face dataset repository (data/<split>/part-*.parquet, "
                "label a ClassLabel); %d files, no crop is decoded again", work.path(OUT_DIR), len(files))
    fp = run.fingerprint
    p = {**old_info["params"], **{k: v for k, v in st["params"].items() if k != "augment"}}
    summaries, units = [], []
    for rel in files:
        folder, name = Path(rel).parts[1], Path(rel).name
        new_rel = f"{DATA_DIR}/{FOLDERS[folder]}/{name}"
        table = schema.conform(storage.read_table(work.path(rel)).replace_schema_metadata(None), NAME)
        _write_table(table, work.path(new_rel), p["row_group_rows"])
        counts: dict[tuple, int] = defaultdict(int)
        _count_classes(counts, table)
        summaries.append(_shard_summary(new_rel, folder, counts, table.num_rows, storage.size(work.path(new_rel))))
        units.append(new_rel)
    for folder in _V1_FOLDERS:
        if work.path(OUT_DIR, folder).exists():
            storage.remove_tree(work.path(OUT_DIR, folder))
    atomic.write_bytes(work.path(OUT_DIR, "_fingerprint"), fp.encode())
    info = {**old_info["selection"], "estimated_image_bytes": old_info["sizing"]["estimated_bytes_per_image"],
            "preset": old_info["augmentations"], "params": p}
    dataset_info = _dataset_info(work, stage, fp, info, pa.concat_tables(summaries))
    atomic.write_json(work.path(INFO), dataset_info)
    atomic.write_bytes(work.path(CARD), _card(dataset_info).encode())
    counts = {"rows": dataset_info["rows"], "shards": len(units), "units": len(units), "computed": 0,
              "resumed": 0, "migrated": len(units),
              **{f"rows_{s}": v["rows"] for s, v in dataset_info["splits"].items()}}
    return Output(report=dataset_info, counts=counts, files=[*units, INFO, CARD])


# the upstream parameters the data card states (no paths: a card may be published)
_BUILD_KEYS = {"manifest": ("sources", "compression"),
               "faces": ("frames", "every_seconds", "stride", "margin", "cascade", "verify", "image_format"),
               "dedupe": ("radius", "within_video"), "split": ("protocol", "ratios", "seed")}


def _build_params(work: Work) -> dict:
    out = {}
    for name, keys in _BUILD_KEYS.items():
        params = (work.state(name) or {}).get("params", {})
        kept = {k: params[k] for k in keys if params.get(k) is not None}
        if kept:
            out[name] = kept
    return out


def _dataset_info(work: Work, stage: Stage, fp: str, info: dict, summary: pa.Table | None) -> dict:
    rows = summary.to_pylist() if summary is not None else []
    per_class: dict[tuple, int] = defaultdict(int)
    files: dict[str, dict] = {}
    for r in rows:
        per_class[(r["split"], r["source"], r["label"], r["augmentation"])] += r["rows"]
        files[r["shard"]] = {"path": r["shard"][len(OUT_DIR) + 1:], "split": r["split"],
                             "rows": r["shard_rows"], "bytes": r["shard_bytes"]}
    splits: dict[str, dict] = {}
    for f in files.values():
        s = splits.setdefault(f["split"], {"rows": 0, "shards": 0, "bytes": 0, "files": []})
        s["rows"] += f["rows"]
        s["shards"] += 1
        s["bytes"] += f["bytes"]
        s["files"].append({k: v for k, v in f.items() if k != "split"})
    order = {s: i for i, s in enumerate((*SPLITS, PERTURBED))}
    splits = dict(sorted(splits.items(), key=lambda kv: order.get(kv[0], 99)))
    p = info["params"]
    return {
        "artifact": "mesodata shards", "schema": "schemas/shards.yaml", "fingerprint": fp,
        "stage_version": stage.version,
        "params": {**{k: p.get(k, DEFAULTS[k]) for k in DEFAULTS if k != "augment"}, "augment": str(p["augment"])},
        "augmentations": info["preset"],
        "upstream": {name: (work.state(name) or {}).get("fingerprint") for name in UPSTREAM},
        "build": _build_params(work),
        "selection": {k: info[k] for k in ("faces_rows", "selected", "dropped")},
        "sizing": {"shard_size": p["shard_size"], "estimated_bytes_per_image": info["estimated_image_bytes"],
                   "row_group_rows": p["row_group_rows"], "min_shards": p["min_shards"]},
        "rows": sum(s["rows"] for s in splits.values()),
        "splits": splits,
        "counts": [{"split": s, "source": src, "label": int(lab), "augmentation": aug, "rows": n}
                   for (s, src, lab, aug), n in sorted(per_class.items(),
                                                       key=lambda kv: (order.get(kv[0][0], 99), *map(str, kv[0][1:])))],
        "features": hf_features(),
    }


def hf_split(split: str) -> str:
    """mesodata's split name -> the Hugging Face split (and folder under data/) it is published as."""
    return FOLDERS.get(split, split.replace("-", "_"))  # Hugging Face split names are \w+ only


# Per source: the terms it comes under and the papers to cite (data card).
_SOURCES = {
    "ff++": ("FaceForensics++ (with DeepFakeDetection and FaceShifter)",
             "FaceForensics Terms of Use: access on request, non-commercial research and education only, "
             "no redistribution of the data; the source videos remain their owners' (YouTube uploaders; "
             "DeepFakeDetection's paid, consenting actors, filmed by Google/Jigsaw).", ("roessler2019faceforensicspp",)),
    "celebdf": ("Celeb-DF v2",
                "Celeb-DF Terms of Use: access on request, non-commercial research only, no redistribution; "
                "the videos are of public figures from YouTube, who keep their rights.", ("li2020celebdf",)),
    "dfdc": ("DFDC (preview and/or full release)",
             "DFDC Terms of Use (Meta / the Kaggle competition data licence): research use, no redistribution "
             "outside it; every subject is a paid, consenting actor.", ("dolhansky2020dfdc", "dolhansky2019dfdc")),
}
_BIBTEX = {
    "roessler2019faceforensicspp": """@inproceedings{roessler2019faceforensicspp,
  author    = {Andreas R{\\"o}ssler and Davide Cozzolino and Luisa Verdoliva and Christian Riess and Justus Thies and Matthias Nie{\\ss}ner},
  title     = {FaceForensics++: Learning to Detect Manipulated Facial Images},
  booktitle = {IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2019}
}""",
    "li2020celebdf": """@inproceedings{li2020celebdf,
  author    = {Yuezun Li and Xin Yang and Pu Sun and Honggang Qi and Siwei Lyu},
  title     = {Celeb-DF: A Large-Scale Challenging Dataset for DeepFake Forensics},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2020}
}""",
    "dolhansky2020dfdc": """@article{dolhansky2020dfdc,
  author  = {Brian Dolhansky and Joanna Bitton and Ben Pflaum and Jikuo Lu and Russ Howes and Menglin Wang and Cristian Canton Ferrer},
  title   = {The DeepFake Detection Challenge (DFDC) Dataset},
  journal = {arXiv preprint arXiv:2006.07397},
  year    = {2020}
}""",
    "dolhansky2019dfdc": """@article{dolhansky2019dfdc,
  author  = {Brian Dolhansky and Russ Howes and Ben Pflaum and Nicole Baram and Cristian Canton Ferrer},
  title   = {The Deepfake Detection Challenge (DFDC) Preview Dataset},
  journal = {arXiv preprint arXiv:1910.08854},
  year    = {2019}
}""",
    "afchar2018mesonet": """@inproceedings{afchar2018mesonet,
  author    = {Darius Afchar and Vincent Nozick and Junichi Yamagishi and Isao Echizen},
  title     = {MesoNet: a Compact Facial Video Forgery Detection Network},
  booktitle = {IEEE International Workshop on Information Forensics and Security (WIFS)},
  year      = {2018}
}""",
}


def _build_lines(build: dict) -> str:
    if not build:
        return ""
    return "Parameters: " + "; ".join(f"{stage} " + ", ".join(f"{k}={v}" for k, v in params.items())
                                      for stage, params in build.items()) + ".\n"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def _yaml_features() -> str:
    """The card's `dataset_info.features`, in Hugging Face's YAML form (the same as the files' metadata)."""
    lines = []
    for name, feat in hf_features().items():
        lines.append(f"  - name: {name}")
        if feat["_type"] == "Image":
            lines.append("    dtype: image")
        elif feat["_type"] == "ClassLabel":
            lines.append("    dtype:\n      class_label:\n        names:")
            lines += [f"          '{i}': {n}" for i, n in enumerate(feat["names"])]
        else:
            lines.append(f"    dtype: {feat['dtype']}")
    return "\n".join(lines)


def _card(info: dict) -> str:
    from ..report import format_table

    yaml_splits = "\n".join(f"  - split: {hf_split(s)}\n    path: \"data/{hf_split(s)}/*.parquet\""
                            for s in info["splits"])
    yaml_sizes = "\n".join(f"  - name: {hf_split(s)}\n    num_bytes: {v['bytes']}\n    num_examples: {v['rows']}"
                           for s, v in info["splits"].items())
    total_bytes = sum(v["bytes"] for v in info["splits"].values())
    split_rows = [{"split": s, "folder": f"data/{hf_split(s)}", "rows": v["rows"], "shards": v["shards"],
                   "MB": round(v["bytes"] / 1e6, 1)} for s, v in info["splits"].items()]
    aug_lines = "\n".join(f"- `{a['name']}`: " + ", ".join(f"{k}={v}" for k, v in a.items() if k != "name")
                          for a in info["augmentations"]["train"]) or "- none"
    pert_lines = "\n".join(f"- `{a['name']}`: " + ", ".join(f"{k}={v}" for k, v in a.items() if k != "name")
                           for a in info["augmentations"]["perturb"]) if PERTURBED in info["splits"] else ""
    dropped = ", ".join(f"{k}: {v}" for k, v in info["selection"]["dropped"].items() if v) or "none"
    p = info["params"]
    held = sorted({c["source"] for c in info["counts"]})
    licence_lines = "\n".join(
        f"- **{_SOURCES[s][0]}** (`source` = `{s}`): {_SOURCES[s][1]}" if s in _SOURCES
        else f"- `{s}`: see the terms of the dataset it comes from." for s in held)
    cites = [k for s in held if s in _SOURCES for k in _SOURCES[s][2]] + ["afchar2018mesonet"]
    bibtex = "\n\n".join(_BIBTEX[k] for k in dict.fromkeys(cites))
    source_tags = {"ff++": "faceforensics", "celebdf": "celeb-df", "dfdc": "dfdc"}
    tags = "\n".join(f"- {t}" for t in ["deepfake-detection", "face-forgery", "mesodata",
                                         *(source_tags[s] for s in held if s in source_tags)])
    return f"""---
pretty_name: mesodata leak-free face-crop deepfake benchmark
license: other
license_name: per-source-terms
task_categories:
- image-classification
tags:
{tags}
size_categories:
- {_size_category(info['rows'])}
configs:
- config_name: default
  data_files:
{yaml_splits}
dataset_info:
  features:
{_yaml_features()}
  splits:
{yaml_sizes}
  download_size: {total_bytes}
  dataset_size: {total_bytes}
---
# mesodata face-crop benchmark

256x256 face crops labelled real or fake, one row per image, cut from the deepfake video datasets
listed below by mesodata and split so that no identity, source clip or
duplicate crosses splits. `label` is a class label: **0 = real, 1 = fake**.

This folder is a Hugging Face dataset repository as it stands:

```python
import datasets
ds = datasets.load_dataset("path/to/this/folder")       # splits {", ".join(hf_split(s) for s in info["splits"])}
ds["train"][0]["image"]                                  # a PIL image; ds["train"].features["label"].names == ["real", "fake"]
```

Any Parquet reader takes `data/` (`pd.read_parquet("data")`, `pyarrow.dataset.dataset("data")`,
`polars.read_parquet("data/**/*.parquet")`, DuckDB `FROM 'data/**/*.parquet'`). To publish it,
upload the folder as it is, e.g. `hf upload YOUR_NAME/DATASET_NAME . --repo-type dataset` (mind the
licences below: most allow no redistribution, so keep such a repository private or gated).

## Layout and columns

`data/<split>/part-NNNNN.parquet`, schema `schemas/shards.yaml` of mesodata, row groups of
{p['row_group_rows']} rows, the Hugging Face features in each file's metadata. The folders use Hugging
Face's split names; the `split` column keeps mesodata's (`val` is published as `validation`,
`test-perturbed` as `test_perturbed`).

| column | |
|---|---|
| `image` | the crop, PNG bytes (Hugging Face `Image`) |
| `label` | `ClassLabel` [real, fake]: 0 = real, 1 = fake |
| `source`, `method` | the dataset (`ff++`, `celebdf`, `dfdc`) and its manipulation method or real subset |
| `video_id`, `frame_index` | the video (`<source>/<path in the dataset>`) and the 0-based frame the crop is from |
| `group` | the leak-free unit the split kept whole (identities, source clips, duplicate clusters) |
| `split` | `train`, `val`, `test` or `test-perturbed` |
| `augmentation`, `aug_params` | `none` for an original, else the transform and its exact parameters (JSON) |

## How it was built

1. A manifest of every video of the sources held, with its label (1 = fake), method, compression
   and identity links, checked against each release's metadata.
2. Frames sampled from each video (evenly spaced by default); the largest Viola-Jones (OpenCV Haar
   cascade) face, cut as a square with a margin and resized to 256x256; a dlib HOG check of each
   crop (unless built with `--verify none`).
3. Exact (pixel hash) and near duplicates (pHash) found across the whole benchmark; one crop of each
   cluster kept.
4. Whole groups (identity and source-clip links of every source joined with the duplicate clusters)
   assigned to train/val/test per source x label x method stratum, so that nothing leaks across splits.
5. Train gets each original plus the augmented copies below; val and test are clean{
   "; test_perturbed holds perturbed copies of every test crop" if PERTURBED in info["splits"] else ""}.

{_build_lines(info.get("build", {}))}
Fingerprint `{info['fingerprint'][:16]}`; seed {p['seed']}, augment `{p['augment']}`,
perturb_test {p['perturb_test']}, shard_size {p['shard_size']} bytes, {p['row_group_rows']} rows per row group.
Upstream: {", ".join(f"{k} `{(v or '')[:16]}`" for k, v in info['upstream'].items())}.

## Splits

{format_table(split_rows, ["split", "folder", "rows", "shards", "MB"])}

## Rows per split, source and label

`originals` are the crops as cut (`augmentation` = `none`), `copies` their augmented or perturbed
copies; `dataset_info.json` splits the copies by augmentation.

{format_table(_card_counts(info["counts"]), ["split", "source", "label", "originals", "copies", "rows"])}

## Augmentations

Train holds each original (`augmentation` = `none`) and one copy per transform below; val and
test are clean. Each copy's `aug_params` column holds the exact parameters and its seed,
a hash of (seed, video_id, frame_index, transform name).

{aug_lines}
{_storage_paragraph(p.get("augment_storage", "materialized"), info["splits"], info["augmentations"]["train"])}
{f"{chr(10)}test_perturbed holds these copies of every test crop (no originals):{chr(10)}{chr(10)}{pert_lines}{chr(10)}" if pert_lines else ""}
## Selection

{info['selection']['faces_rows']} face rows upstream, {info['selection']['selected']} shipped as originals.
Left out: {dropped}.

## Licences

The crops are derived from the datasets below and stay under their terms; mesodata's own licence
(MIT) covers the code, not this data. Whoever holds this folder must be entitled to each source.

{licence_lines}

## Citation

Cite the datasets the crops come from and the method this benchmark was made for:

```bibtex
{bibtex}
```
"""


def _storage_paragraph(storage_mode: str, splits: dict, train_copies: list) -> str:
    """What a reader of the card must know when the train copies carry no image bytes."""
    if not on_read_split("train", storage_mode) or "train" not in splits or not train_copies:
        return ""
    return """
**Augmentation storage: on-read.** Only the originals of `train` carry image bytes. Each copy is a
row whose `image` is **null** (`None` in `datasets`, pandas and pyarrow) and whose `aug_params` holds
the exact parameters and seed; each train file's Parquet metadata (key `mesodata`) holds the preset
entries, and every row group holds whole families (an original and all its copies). A plain Parquet
or `datasets` reader sees the copies without images: filter them out (`augmentation == "none"`) or
read the split with mesodata's `ShardDataset` (`mesodata.detector.data`), which makes each copy
from its original, pixel for pixel the image a materialized copy holds
(`mesodata.pipeline.augment.replay(original, entry, aug_params)` does it for one row).
"""


def _card_counts(counts: list[dict]) -> list[dict]:
    out: dict[tuple, dict] = {}
    for c in counts:
        row = out.setdefault((c["split"], c["source"], c["label"]), {
            "split": c["split"], "source": c["source"], "label": c["label"], "originals": 0, "copies": 0, "rows": 0})
        row["originals" if c["augmentation"] == "none" else "copies"] += c["rows"]
        row["rows"] += c["rows"]
    return list(out.values())


def print_report(info: dict) -> None:
    from ..report import print_table

    print_table("Shards: rows per split", [
        {"split": s, "rows": v["rows"], "shards": v["shards"], "MB": round(v["bytes"] / 1e6, 1)}
        for s, v in info["splits"].items()], ["split", "rows", "shards", "MB"])


# --- reading back ----------------------------------------------------------------------------------
def shard_files(work: Work | str | os.PathLike, split: str) -> list[Path]:
    """The shard files of `split` (mesodata's name: train, val, test, test-perturbed) in a work dir
    (a Work, a folder or a URL), in order; [] when there are none. A version-1 work dir's
    `shards/<split>/` is read when `data/` has none."""
    root = work.root if isinstance(work, Work) else storage.location(work)
    files = sorted(root.joinpath(DATA_DIR, hf_split(split)).glob("part-*.parquet"))
    return files or sorted(root.joinpath(OUT_DIR, split).glob("part-*.parquet"))


def read(work: Work, split: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of one split (all columns unless `columns`), in shard order."""
    files = shard_files(work, split)
    if not files:
        raise UserError(f"no {split!r} shards under {work.path(DATA_DIR)}: run `mesodata split` first")
    return pa.concat_tables([storage.read_table(f, columns=columns) for f in files])


STAGE = StageDef(
    NAME, VERSION, upstream=UPSTREAM, check=_check_params, identify=_identify, adopt=_migrate_v1, plan=_plan,
    unit=_write_shard, owns=OUT_DIR, before_map=_before_map, combine=_combine, print_report=print_report,
    up_to_date=lambda st, p: f"up to date ({st['counts']['rows']} rows in {st['counts']['shards']} files), "
                             "nothing to do")
