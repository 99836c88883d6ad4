"""Stage: the benchmark as Parquet shards, `WORK/shards/<split>/part-NNNNN.parquet`.

Rows shipped: face crops (faces status 'face') kept by dedupe, of videos the split assigned to
train, val or test. Train gets each original plus its augmented copies (the preset's `train`
list; the paper's eight by default); val and test stay clean; with `perturb_test`, the preset's
`perturb` copies of every test crop go to `test-perturbed/`.

The plan comes first and is deterministic: videos (in chunks, when a video alone would outgrow
its share) are spread over a split's shards in a seeded order, largest first onto the lightest
shard, and the rows of each shard are put in a seeded order (so each row group mixes videos).
Then every shard is one runner unit that reads its crops, applies the transforms (each copy
seeded by the seed and its own id) and writes its file atomically. The same inputs give
byte-identical shards whatever the worker count; a killed run redoes only missing shards; a
finished one is a no-op.

Each file has the schema of `schemas/shards.yaml`, row groups of `row_group_rows` rows and the
Hugging Face feature metadata, so `datasets.load_dataset("parquet", ...)` decodes `image`.
`WORK/shards/dataset_info.json` and `README.md` (a data card whose YAML header maps the folders
to Hugging Face splits) give the counts, the parameters and the upstream fingerprints.
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

from .. import atomic, augment, schema, storage
from ..errors import UserError
from ..runner import Stage, Unit, Work, map_units, part_name, read_parts, summarize

log = logging.getLogger("mesodata")

__all__ = ["run", "plan", "read", "shard_files", "hf_features", "DEFAULTS", "SPLITS"]

NAME = "shards"
VERSION = "1"
UPSTREAM = ("faces", "dedupe", "split")
OUT_DIR = "shards"
INFO = f"{OUT_DIR}/dataset_info.json"
CARD = f"{OUT_DIR}/README.md"
REPORT = "reports/shards.json"  # the same as INFO, where every stage's report is
SPLITS = ("train", "val", "test")
PERTURBED = "test-perturbed"
DEFAULTS: dict[str, Any] = {
    "shard_size": 256 * 1024 * 1024,  # target bytes per shard file
    "augment": "paper",               # "paper", "none" or a YAML/JSON preset file
    "perturb_test": False,            # also write test-perturbed/
    "seed": 0,
    "row_group_rows": 128,            # rows per row group: what a reader holds at once
    "min_shards": 8,                  # per split, when it has a row group's worth of rows per shard
    "png_compression": 1,             # zlib level of the augmented copies' PNGs (1: 2x faster than 3, +3% bytes)
}
_FACE_COLUMNS = ["video_id", "frame_index", "status", "source", "label", "method", "group"]
_FALLBACK_ROW_BYTES = 120_000  # a 256x256 face PNG, when the faces files say nothing


def hf_features() -> dict:
    """The Hugging Face `Features` of a shard, as stored under the b"huggingface" schema key."""
    feats: dict[str, dict] = {}
    for f in schema.load(NAME):
        if f.name == "image":
            feats[f.name] = {"_type": "Image"}
        else:
            feats[f.name] = {"dtype": str(f.type), "_type": "Value"}
    return feats


def _hf_metadata() -> bytes:
    return json.dumps({"info": {"features": hf_features()}}, sort_keys=True).encode()


# --- parameters -------------------------------------------------------------------------------
def _check_params(params: dict) -> dict:
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise UserError(f"shards: unknown parameter {sorted(unknown)[0]!r}; known: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}

    def integer(key: str, lo: int, hi: int | None = None) -> None:
        v = p[key]
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            rng = f"[{lo}, {hi}]" if hi is not None else f"[{lo}, inf)"
            raise UserError(f"The {key!r} parameter of shards must be an int in the range {rng}. Got {v!r} instead.")
        p[key] = int(v)

    integer("shard_size", 1)
    integer("seed", 0)
    integer("row_group_rows", 1)
    integer("min_shards", 1)
    integer("png_compression", 0, 9)
    if not isinstance(p["perturb_test"], bool):
        raise UserError(f"The 'perturb_test' parameter of shards must be a bool. Got {p['perturb_test']!r} instead.")
    return p


def _stage(p: dict, preset: dict) -> Stage:
    fp_params = {k: p[k] for k in DEFAULTS if k != "augment"}
    fp_params["augment"] = preset  # the content, so an edited preset file redoes the shards
    return Stage(NAME, VERSION, fp_params, UPSTREAM)


# --- reading the upstream tables -----------------------------------------------------------------
def _faces_files(work: Work) -> list[Path]:
    """The faces stage's Parquet parts: those its index lists (faces/_index.json, in its order),
    else its recorded Parquet outputs under faces/, else every part there."""
    index = work.path("faces", "_index.json")
    if index.exists():
        try:
            files = [work.path("faces", e["part"]) for e in json.loads(index.read_text())["parts"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{index} is corrupt ({exc}): rerun `mesodata build`") from exc
        missing = [f for f in files if not f.exists()]
        if missing:
            raise UserError(f"face part {missing[0]} is missing: rerun `mesodata build` to redo it")
        return files
    st = work.state("faces") or {}
    files = sorted(work.path(o) for o in st.get("outputs", {})
                   if o.endswith(".parquet") and Path(o).parts[0] == "faces")
    if not files:
        files = sorted(p for p in work.path("faces").rglob("*.parquet")
                       if not p.name.startswith((".", "_")))
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


def _selection(work: Work):
    """Rows to ship (a DataFrame, one per original crop) and how many rows were left out, and why."""
    import pandas as pd

    faces, image_bytes = [], 0
    for f in _faces_files(work):
        pf = storage.parquet_file(f)
        cols = [c for c in _FACE_COLUMNS if c in pf.schema_arrow.names]
        df = pf.read(columns=cols).to_pandas()
        df["_file"], df["_row"] = str(f), np.arange(len(df), dtype=np.int64)
        faces.append(df)
        image_bytes += _image_bytes(pf)
    faces = pd.concat(faces, ignore_index=True)
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
def _spread(videos: list[tuple[str, list[int]]], n_rows_per_orig: int, n_shards: int, rng: random.Random):
    """Assign (video, originals) chunks to `n_shards` shards: seeded order, largest first, lightest shard."""
    total = sum(len(r) for _, r in videos)
    chunk = max(1, math.ceil(total / n_shards / 2))
    chunks = [rows[i:i + chunk] for _, rows in videos for i in range(0, len(rows), chunk)]
    rng.shuffle(chunks)
    chunks.sort(key=len, reverse=True)  # stable: equal sizes keep the seeded order
    n_shards = min(n_shards, len(chunks))
    loads, shards = [0] * n_shards, [[] for _ in range(n_shards)]
    for c in chunks:
        k = min(range(n_shards), key=lambda i: (loads[i], i))
        shards[k].extend(c)
        loads[k] += len(c) * n_rows_per_orig
    return shards


def plan(work: Work, params: dict) -> tuple[Stage, list[Unit], dict]:
    """Decide every shard's rows, in order, before anything is written: (stage, units, selection info)."""
    p = _check_params(params)
    preset = augment.load_preset(p["augment"])
    stage = _stage(p, preset)
    rows, info = _selection(work)
    specs = {s["name"]: s for s in preset["train"] + preset["perturb"]}
    layout = {"train": [None] + [s["name"] for s in preset["train"]], "val": [None], "test": [None]}
    if p["perturb_test"] and preset["perturb"]:
        layout[PERTURBED] = [s["name"] for s in preset["perturb"]]
    # one lean record per original crop: what a worker needs to find and label it
    recs = list(zip(rows["_file"], rows["_row"].tolist(), rows["video_id"], rows["frame_index"].tolist(),
                    rows["source"], rows["label"].astype(int).tolist(), rows["method"], rows["group"],
                    rows["split"]))
    units: list[Unit] = []
    for folder, copies in layout.items():
        source_split = "test" if folder == PERTURBED else folder
        idx = [i for i, r in enumerate(recs) if r[8] == source_split]
        if not idx:
            continue
        by_video: dict[str, list[int]] = defaultdict(list)
        for i in idx:
            by_video[recs[i][2]].append(i)
        n_out = len(idx) * len(copies)
        n_shards = max(1, math.ceil(n_out * info["estimated_image_bytes"] / p["shard_size"]),
                       min(p["min_shards"], n_out // p["row_group_rows"]))
        shards = _spread(sorted(by_video.items()), len(copies), n_shards, random.Random(f"{p['seed']}:{folder}"))
        for k, originals in enumerate(shards):
            out_rows = [(*recs[i][:8], aug) for i in originals for aug in copies]
            random.Random(f"{p['seed']}:{folder}:{k}").shuffle(out_rows)
            rel = f"{OUT_DIR}/{folder}/part-{k:05d}.parquet"
            units.append(Unit(rel, {
                "out": work.path(rel), "rel": rel, "split": folder, "rows": out_rows,
                "specs": {a: specs[a] for a in copies if a is not None}, "seed": p["seed"],
                "row_group_rows": p["row_group_rows"], "png_compression": p["png_compression"]}))
    info["preset"] = preset
    info["params"] = p
    return stage, units, info


# --- one unit: one shard ---------------------------------------------------------------------------
def _read_crops(rows: list[tuple]) -> dict[tuple[str, int], dict]:
    """The image structs of the rows' crops, read row group by row group, checked against their ids."""
    need: dict[str, set[int]] = defaultdict(set)
    ids = {}
    for r in rows:
        need[r[0]].add(r[1])
        ids[(r[0], r[1])] = (r[2], r[3])
    out = {}
    for f, wanted in need.items():
        pf = storage.parquet_file(f)
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        groups = sorted({int(np.searchsorted(starts, i, side="right") - 1) for i in wanted})
        for g in groups:
            t = pf.read_row_group(g, columns=["video_id", "frame_index", "image"])
            vids, frames = t["video_id"].to_pylist(), t["frame_index"].to_pylist()
            images = t["image"].to_pylist()
            for i in wanted:
                j = i - int(starts[g])
                if 0 <= j < t.num_rows:
                    if (vids[j], frames[j]) != ids[(f, i)]:
                        raise RuntimeError(f"{f} row {i} is {vids[j]}#{frames[j]}, expected "
                                           f"{ids[(f, i)][0]}#{ids[(f, i)][1]}: the faces files changed "
                                           "during the run; rerun the split")
                    if images[j] is None or not images[j].get("bytes"):
                        raise RuntimeError(f"{vids[j]} frame {frames[j]} has status 'face' but no image in {f}")
                    out[(f, i)] = images[j]
    return out


def _encode_png(rgb: np.ndarray, level: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, level])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _decode_rgb(data: bytes, where: str) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RuntimeError(f"cannot decode the crop of {where} ({len(data)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _write_shard(payload: dict) -> pa.Table:
    """Materialize one planned shard, write it atomically, return its per-class counts (the runner's part)."""
    rows, specs = payload["rows"], payload["specs"]
    crops = _read_crops(rows)
    decoded: dict[tuple[str, int], np.ndarray] = {}
    remaining = defaultdict(int)  # copies still to make of each crop: free its pixels after the last
    for r in rows:
        if r[8] is not None:
            remaining[(r[0], r[1])] += 1
    cols: dict[str, list] = defaultdict(list)
    for f, i, vid, frame, source, label, method, group, aug in rows:
        key = (f, i)
        stem = f"{vid}/{frame:06d}"
        if aug is None:
            image = {"bytes": crops[key]["bytes"], "path": crops[key].get("path") or f"{stem}.png"}
            params = "{}"
        else:
            if key not in decoded:
                decoded[key] = _decode_rgb(crops[key]["bytes"], f"{vid}#{frame}")
            seed = augment.sample_seed(payload["seed"], vid, frame, aug)
            out, used = augment.apply(decoded[key], specs[aug], seed)
            image = {"bytes": _encode_png(out, payload["png_compression"]), "path": f"{stem}-{aug}.png"}
            params = json.dumps(used, sort_keys=True)
            remaining[key] -= 1
            if not remaining[key]:
                del decoded[key]
        cols["image"].append(image)
        for name, v in (("label", label), ("source", source), ("method", method), ("video_id", vid),
                        ("frame_index", frame), ("split", payload["split"]), ("group", group),
                        ("augmentation", aug or "none"), ("aug_params", params)):
            cols[name].append(v)
    target = schema.load(NAME)
    table = pa.table({f.name: pa.array(cols[f.name], f.type) for f in target})
    table = schema.conform(table, NAME)
    table = table.replace_schema_metadata({**table.schema.metadata, b"huggingface": _hf_metadata()})
    small = [c for c in table.column_names if c != "image"] + ["image.path"]
    with atomic.atomic_path(payload["out"]) as tmp:
        pq.write_table(table, tmp, row_group_size=payload["row_group_rows"],
                       compression={**{c: "zstd" for c in small}, "image.bytes": "none"},
                       use_dictionary=small, write_statistics=small)
        os.chmod(tmp, 0o644)  # a dataset others read (mkstemp makes 0600)
    size = storage.size(payload["out"])
    counts = defaultdict(int)
    for key in zip(table["source"].to_pylist(), table["label"].to_pylist(), table["method"].to_pylist(),
                   table["augmentation"].to_pylist()):
        counts[key] += 1
    items = sorted(counts.items())
    return pa.table({
        "shard": [payload["rel"]] * len(items), "split": [payload["split"]] * len(items),
        "source": [k[0] for k, _ in items], "label": pa.array([k[1] for k, _ in items], pa.int8()),
        "method": [k[2] for k, _ in items], "augmentation": [k[3] for k, _ in items],
        "rows": pa.array([n for _, n in items], pa.int64()),
        "shard_rows": pa.array([table.num_rows] * len(items), pa.int64()),
        "shard_bytes": pa.array([size] * len(items), pa.int64()),
    })


# --- the stage -------------------------------------------------------------------------------------
def run(work: Work, params: dict, *, workers: int = 1, executor=None) -> dict:
    """Write `WORK/shards/` from the faces, dedupe and split tables; return the stage state.

    params: shard_size (bytes), augment ("paper", "none" or a preset file), perturb_test (bool),
    seed (int); optional row_group_rows, min_shards, png_compression (see DEFAULTS).
    """
    stage = _stage((p := _check_params(params)), augment.load_preset(p["augment"]))
    if work.is_fresh(stage):
        st = work.state(NAME)
        log.info("shards: up to date (%d rows in %d files), nothing to do",
                 st["counts"]["rows"], st["counts"]["shards"])
        return st
    fp = work.fingerprint(stage)
    stage, units, info = plan(work, params)
    work.parts_dir(stage, fp, where=OUT_DIR)  # emptied when it holds another fingerprint's shards
    parts = work.parts_dir(stage, fp)
    for tmp in work.path(OUT_DIR).glob("*/.part-*.tmp"):  # left by a killed run (one build per work dir)
        tmp.unlink(missing_ok=True)
    for u in units:  # a part whose shard has gone would be skipped: drop it so the shard is redone
        if not u.payload["out"].exists():
            (parts / part_name(u.key)).unlink(missing_ok=True)
    results = map_units(_write_shard, units, parts, artifact=None, workers=workers,
                        desc="shards", executor=executor)
    missing = [u.key for u in units if not u.payload["out"].exists()]
    if missing:
        raise RuntimeError(f"shards: {len(missing)} shard(s) missing after the run, e.g. {missing[0]}")
    summary = read_parts(parts, [u.key for u in units])
    dataset_info = _dataset_info(work, stage, fp, info, summary)
    atomic.write_json(work.path(INFO), dataset_info)
    atomic.write_json(work.path(REPORT), dataset_info)
    atomic.write_bytes(work.path(CARD), _card(dataset_info).encode())
    _print_report(dataset_info)
    counts = {"rows": dataset_info["rows"], "shards": len(units), **summarize(results),
              **{f"rows_{s}": v["rows"] for s, v in dataset_info["splits"].items()}}
    return work.record(stage, [u.key for u in units] + [INFO, CARD, REPORT], counts)


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
        "params": {**{k: p[k] for k in DEFAULTS if k != "augment"}, "augment": str(p["augment"])},
        "augmentations": info["preset"],
        "upstream": {name: (work.state(name) or {}).get("fingerprint") for name in UPSTREAM},
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


def _hf_split(folder: str) -> str:
    return folder.replace("-", "_")  # Hugging Face split names are \w+ only


def _card(info: dict) -> str:
    from ..report import format_table

    yaml_splits = "\n".join(f"  - split: {_hf_split(s)}\n    path: \"{s}/part-*.parquet\"" for s in info["splits"])
    split_rows = [{"split": s, "rows": v["rows"], "shards": v["shards"], "MB": round(v["bytes"] / 1e6, 1)}
                  for s, v in info["splits"].items()]
    aug_lines = "\n".join(f"- `{a['name']}`: " + ", ".join(f"{k}={v}" for k, v in a.items() if k != "name")
                          for a in info["augmentations"]["train"]) or "- none"
    pert_lines = "\n".join(f"- `{a['name']}`: " + ", ".join(f"{k}={v}" for k, v in a.items() if k != "name")
                           for a in info["augmentations"]["perturb"]) if PERTURBED in info["splits"] else ""
    dropped = ", ".join(f"{k}: {v}" for k, v in info["selection"]["dropped"].items() if v) or "none"
    p = info["params"]
    return f"""---
configs:
- config_name: default
  data_files:
{yaml_splits}
---
# mesodata face-crop benchmark

256x256 face crops with labels (1 = fake, 0 = real), one row per image, in Parquet shards
(`<split>/part-NNNNN.parquet`, schema `schemas/shards.yaml`, Hugging Face `Image` feature).
Load with `datasets.load_dataset("parquet", data_files="train/*.parquet")`, or this folder
(the split `test-perturbed` is called `test_perturbed` there), or any Parquet reader.

Fingerprint `{info['fingerprint'][:16]}`; seed {p['seed']}, augment `{p['augment']}`,
perturb_test {p['perturb_test']}, shard_size {p['shard_size']} bytes, {p['row_group_rows']} rows per row group.
Upstream: {", ".join(f"{k} `{(v or '')[:16]}`" for k, v in info['upstream'].items())}.

## Splits

{format_table(split_rows, ["split", "rows", "shards", "MB"])}

## Rows per split, source and label

`originals` are the crops as cut (`augmentation` = `none`), `copies` their augmented or perturbed
copies; `dataset_info.json` splits the copies by augmentation.

{format_table(_card_counts(info["counts"]), ["split", "source", "label", "originals", "copies", "rows"])}

## Augmentations

Train holds each original (`augmentation` = `none`) and one copy per transform below; val and
test are clean. Each copy's `aug_params` column holds the exact parameters and its seed,
a hash of (seed, video_id, frame_index, transform name).

{aug_lines}
{f"{chr(10)}test-perturbed holds these copies of every test crop (no originals):{chr(10)}{chr(10)}{pert_lines}{chr(10)}" if pert_lines else ""}
## Selection

{info['selection']['faces_rows']} face rows upstream, {info['selection']['selected']} shipped as originals.
Left out: {dropped}.
"""


def _card_counts(counts: list[dict]) -> list[dict]:
    out: dict[tuple, dict] = {}
    for c in counts:
        row = out.setdefault((c["split"], c["source"], c["label"]), {
            "split": c["split"], "source": c["source"], "label": c["label"], "originals": 0, "copies": 0, "rows": 0})
        row["originals" if c["augmentation"] == "none" else "copies"] += c["rows"]
        row["rows"] += c["rows"]
    return list(out.values())


def _print_report(info: dict) -> None:
    from ..report import print_table

    print_table("Shards: rows per split", [
        {"split": s, "rows": v["rows"], "shards": v["shards"], "MB": round(v["bytes"] / 1e6, 1)}
        for s, v in info["splits"].items()], ["split", "rows", "shards", "MB"])


# --- reading back ----------------------------------------------------------------------------------
def shard_files(work: Work, split: str) -> list[Path]:
    """The shard files of `split`, in order; [] when there are none."""
    return sorted(work.path(OUT_DIR, split).glob("part-*.parquet"))


def read(work: Work, split: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of one split (all columns unless `columns`), in shard order."""
    files = shard_files(work, split)
    if not files:
        raise UserError(f"no {split!r} shards under {work.path(OUT_DIR)}: run `mesodata split` first")
    return pa.concat_tables([storage.read_table(f, columns=columns) for f in files])
