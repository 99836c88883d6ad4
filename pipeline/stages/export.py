"""Stage: the benchmark exported for other tools, `mesodata export-dataset --format F --out DIR`.

Formats:

- `deepfakebench`: what DeepfakeBench's training code reads. `DIR/dataset_json/<Name>.json` per
  dataset, in its structure `{Name: {label_name: {mode: {[compression:] {video: {"label": label_name,
  "frames": [paths]}}}}}}` with its own dataset and label names, modes train/val/test from
  mesodata's split, the FF++ compression level as the extra level it expects for FaceForensics++,
  its per-method subsets, DeepFakeDetection and FaceShifter; the crops as PNG files named by their
  integer frame index (`DIR/<Name>/<label_name>/[<compression>/]frames/<video>/<NNN>.png`);
  frame paths `<path_prefix>/<that path>`, which resolve from DeepfakeBench's repository root when
  DIR is placed at `datasets/mesodata` there (a path beginning with "." is used as given).
- `imagefolder`: `DIR/<split>/<real|fake>/<source>__<video>__<frame>.png` (torchvision's
  `ImageFolder`) and `DIR/metadata.csv`, a row per image.

Both take the originals only (`augmentation` = `none`) of train, val and test: the tools augment
themselves. The export is a stage like the others: its fingerprint hashes its format, parameters
and output folder and the split's fingerprint (a new split, or other format parameters, redo it;
new augmentations or shard sizes do not), each unit (one shard file) writes its PNGs atomically
(temp file, rename) and then its runner part, so a killed export resumes with the unfinished shards
only; the index files (JSON, CSV, README) are written last. `DIR/.mesodata-export.json` marks the
folder as an export: mesodata writes only into an empty folder or one that holds its own export.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import atomic, cells, storage
from ..errors import UserError
from ..runner import Output, Param, Stage, StageDef, StageRun, Unit, Work, check_params, run_stage
from . import shards as shards_stage

log = logging.getLogger("mesodata")

__all__ = ["STAGES", "run", "FORMATS", "DEFAULTS", "MARKER", "deepfakebench_names"]

VERSION = "1"
FORMATS = ("deepfakebench", "imagefolder")
PARAMS: dict[str, dict[str, Param]] = {  # each format's options
    "deepfakebench": {"path_prefix": Param("./datasets/mesodata", str)},
    "imagefolder": {},
}
DEFAULTS: dict[str, dict[str, Any]] = {fmt: {k: v.default for k, v in d.items()} for fmt, d in PARAMS.items()}
MARKER = ".mesodata-export.json"
MODES = ("train", "val", "test")  # mesodata's splits; DeepfakeBench's modes have the same names
LABEL_NAMES = ("real", "fake")
_COLUMNS = ["video_id", "frame_index", "split", "source", "label", "method", "group", "augmentation"]

# --- DeepfakeBench's names (its train_config.yaml label_dict and dataset_json file names) ------------
_FF_LABEL = {"youtube": "FF-real", "Deepfakes": "FF-DF", "Face2Face": "FF-F2F", "FaceSwap": "FF-FS",
             "NeuralTextures": "FF-NT", "FaceShifter": "FF-FH"}
_FF_SUBSETS = {"FF-DF": "FF-DF", "FF-F2F": "FF-F2F", "FF-FS": "FF-FS", "FF-NT": "FF-NT", "FF-FH": "FaceShifter"}
# datasets whose JSON holds the compression level under each mode (DeepfakeBench's FF++ family)
COMPRESSED = ("FaceForensics++", "FF-DF", "FF-F2F", "FF-FS", "FF-NT", "FaceShifter", "DeepFakeDetection")
LABEL_DICT = {  # label name -> 0 real / 1 fake, as DeepfakeBench's label_dict
    "FF-real": 0, "FF-DF": 1, "FF-F2F": 1, "FF-FS": 1, "FF-NT": 1, "FF-FH": 1,
    "DFD_real": 0, "DFD_fake": 1, "CelebDFv2_real": 0, "CelebDFv2_fake": 1,
    "DFDCP_Real": 0, "DFDCP_FakeA": 1, "DFDCP_FakeB": 1, "DFDC_Real": 0, "DFDC_Fake": 1,
}


def _dfdc_full(video_id: str) -> bool:
    """A DFDC video of the full (Kaggle) release, by its path; else one of the preview set."""
    parts = video_id.split("/")
    return len(parts) > 1 and (parts[1].startswith("dfdc_train_part_") or parts[1] in ("validation", "test"))


def deepfakebench_names(source: str, method: str, label: int, video_id: str) -> tuple[str, str, list[str]] | None:
    """(home dataset, label name, every dataset JSON the video belongs to) in DeepfakeBench's names;
    None for a video DeepfakeBench has no dataset for (e.g. an FF++ method it does not know)."""
    if source == "ff++":
        if method == "actors" or method == "DeepFakeDetection":
            return "DeepFakeDetection", "DFD_real" if label == 0 else "DFD_fake", ["DeepFakeDetection"]
        name = _FF_LABEL.get(method)
        if name is None or LABEL_DICT[name] != label:
            return None
        if label == 0:
            return "FaceForensics++", name, ["FaceForensics++", *dict.fromkeys(_FF_SUBSETS.values())]
        return "FaceForensics++", name, ["FaceForensics++", _FF_SUBSETS[name]]
    if source == "celebdf":
        return "Celeb-DF-v2", "CelebDFv2_real" if label == 0 else "CelebDFv2_fake", ["Celeb-DF-v2"]
    if source == "dfdc":
        if _dfdc_full(video_id):
            return "DFDC", "DFDC_Real" if label == 0 else "DFDC_Fake", ["DFDC"]
        if label == 0:
            return "DFDCP", "DFDCP_Real", ["DFDCP"]
        return "DFDCP", "DFDCP_FakeB" if method.upper().endswith("B") else "DFDCP_FakeA", ["DFDCP"]
    return None


# --- parameters ------------------------------------------------------------------------------------
def _check(fmt: str, out, params: dict) -> tuple[Path, dict]:
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    p = check_params(f"export-{fmt}", PARAMS[fmt], params)
    if fmt == "deepfakebench":
        prefix = str(p["path_prefix"]).rstrip("/")
        if not prefix.startswith("."):
            raise UserError(f"--path-prefix must begin with '.' (DeepfakeBench uses such a path as given and "
                            f"joins any other to its rgb_dir); got {p['path_prefix']!r}")
        if "\\" in prefix or "frames" in prefix.split("/"):
            raise UserError(f"--path-prefix must be a POSIX path without a 'frames' folder; got {p['path_prefix']!r}")
        p["path_prefix"] = prefix
    if out is None or str(out).strip() == "":
        raise UserError("--out is required: the folder to export to")
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", str(out)):
        raise UserError(f"--out must be a local folder; got {out}")
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    return out, p


def _check_out(work: Work, out: Path, fmt: str) -> dict | None:
    """The marker of a previous export in `out` (None when `out` is new or empty); UserError when
    `out` is someone else's folder or lies inside the work dir's artifacts."""
    if not work.remote:
        root = Path(work.root).resolve()
        if out == root or root in out.parents and out.relative_to(root).parts[0] in (
                "shards", "faces", ".state", ".parts", "reports"):
            raise UserError(f"--out {out} lies inside the work dir's own artifacts; choose a folder outside them")
        if out in root.parents:
            raise UserError(f"--out {out} contains the work dir {root}; choose a folder beside it")
    if not out.exists() or not any(out.iterdir()):
        return None
    try:
        marker = json.loads((out / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise UserError(f"--out {out} is not empty and holds no mesodata export; give a new or empty folder") from None
    if marker.get("format") != fmt:
        raise UserError(f"--out {out} holds a {marker.get('format')!r} export; give another folder for {fmt}")
    return marker


# --- the plan --------------------------------------------------------------------------------------
def _rows(work: Work) -> tuple[pa.Table, dict[str, list[str]]]:
    """The originals of train, val and test (no image), and each shard file's videos, from the shards."""
    tables, videos = [], {}
    for split in MODES:
        for f in shards_stage.shard_files(work, split):
            t = storage.read_table(f, columns=_COLUMNS)
            t = t.filter(pc.equal(t["augmentation"], "none"))
            tables.append(t)
            videos[str(f)] = pc.unique(t["video_id"]).to_pylist()
    if not tables:
        raise UserError(f"no shards under {work.path(shards_stage.DATA_DIR)}: run `mesodata split` first")
    return pa.concat_tables(tables), videos


def _check_shards_current(work: Work) -> str:
    """The split fingerprint the shards were made from, which must be the split on record."""
    split = work.state("split")
    if split is None:
        raise UserError(f"stage 'split' has not run in {work.root}; run `mesodata split` first")
    try:
        info = json.loads(work.path(shards_stage.INFO).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise UserError(f"no shards in {work.root}: run `mesodata split` first") from None
    if work.state("shards") is None:
        raise UserError(f"the shards in {work.path('shards')} are not finished: rerun `mesodata split` first")
    if info.get("upstream", {}).get("split") != split["fingerprint"]:
        raise UserError(f"the shards in {work.path('shards')} were made from another split: "
                        "rerun `mesodata split` first")
    return split["fingerprint"]


def _compressions(work: Work, video_ids: set[str]) -> dict[str, str]:
    path = work.path("manifest.parquet")
    if not path.exists():
        raise UserError(f"no manifest.parquet in {work.root}: the FF++ compression level comes from it; "
                        "run `mesodata build` first")
    t = storage.read_table(path, columns=["video_id", "compression"])
    return {v: c for v, c in zip(t["video_id"].to_pylist(), t["compression"].to_pylist()) if v in video_ids}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "_"


def _plan_deepfakebench(work: Work, rows: pa.Table, p: dict) -> tuple[dict, dict]:
    """Per video: its frame folder (relative to DIR) and its DeepfakeBench entry; plus what was left out."""
    videos = {}
    for vid, source, method, label, split in zip(*(rows[c].to_pylist() for c in
                                                   ("video_id", "source", "method", "label", "split"))):
        videos.setdefault(vid, (source, method, int(label), split))
    ff = {v for v, (s, *_ ) in videos.items() if s == "ff++"}
    comp = _compressions(work, ff) if ff else {}
    plan, skipped = {}, defaultdict(int)
    for vid, (source, method, label, split) in sorted(videos.items()):
        names = deepfakebench_names(source, method, label, vid)
        if names is None:
            skipped[f"{source}/{method}"] += 1
            continue
        home, label_name, datasets = names
        c = None
        if home in COMPRESSED:
            c = comp.get(vid)
            if not c:
                raise UserError(f"no compression level for FF++ video {vid} in manifest.parquet: "
                                "rerun `mesodata build`")
        plan[vid] = {"home": home, "label_name": label_name, "datasets": datasets, "compression": c,
                     "mode": split, "key": vid.rsplit("/", 1)[-1]}
    # video names unique within a (home, label, compression): else the whole path names the video
    groups = defaultdict(list)
    for vid, e in plan.items():
        groups[(e["home"], e["label_name"], e["compression"], e["key"])].append(vid)
    for clash in (vids for vids in groups.values() if len(vids) > 1):
        for vid in clash:
            plan[vid]["key"] = _slug(vid.split("/", 1)[-1])
    for vid, e in plan.items():
        level = [e["compression"]] if e["compression"] else []
        e["folder"] = "/".join([e["home"], e["label_name"], *level, "frames", _slug(e["key"])])
    return plan, dict(skipped)


def _plan_imagefolder(rows: pa.Table) -> tuple[dict, dict]:
    plan = {}
    for vid, source, label, split in zip(*(rows[c].to_pylist() for c in ("video_id", "source", "label", "split"))):
        if vid not in plan:
            video = vid.split("/", 1)[1] if vid.startswith(f"{source}/") else vid
            plan[vid] = {"folder": f"{split}/{LABEL_NAMES[int(label)]}", "stem": f"{source}__{_slug(video)}"}
    stems = defaultdict(list)
    for vid, e in plan.items():
        stems[(e["folder"], e["stem"])].append(vid)
    clash = next((v for v in stems.values() if len(v) > 1), None)
    if clash:
        raise RuntimeError(f"videos {clash[0]} and {clash[1]} would share file names in the image folder")
    return plan, {}


def _file_name(fmt: str, entry: dict, frame: int) -> str:
    if fmt == "deepfakebench":
        return f"{entry['folder']}/{frame:03d}.png"  # DeepfakeBench orders frames by int(stem)
    return f"{entry['folder']}/{entry['stem']}__{frame:06d}.png"


# --- one unit: the originals of one shard file ------------------------------------------------------
def _as_png(data: bytes, where: str) -> bytes:
    try:
        return cells.as_png(data)
    except ValueError:
        raise RuntimeError(f"cannot decode the crop of {where} ({len(data)} bytes)") from None


def _write_file(path: Path, data: bytes) -> None:
    """Temp file beside it, then rename: a file under its final name is always complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _export_shard(payload: dict) -> pa.Table:
    """Write the PNGs of one shard file's originals, row group by row group (a worker holds one row
    group's images, whatever the shard's size); return the files written and their rows."""
    out, fmt, plan = Path(payload["out"]), payload["format"], payload["plan"]
    cols: dict[str, list] = defaultdict(list)
    shard = storage.parquet_file(payload["shard"])
    for g in range(shard.num_row_groups):
        t = shard.read_row_group(g, columns=[*_COLUMNS, "image"])
        t = t.filter(pc.equal(t["augmentation"], "none"))
        if not t.num_rows:
            continue
        images = t["image"].combine_chunks().field("bytes").to_pylist()
        for j, (vid, frame, split, source, label, method, group) in enumerate(zip(
                *(t[c].to_pylist() for c in ("video_id", "frame_index", "split", "source", "label", "method",
                                             "group")))):
            entry = plan.get(vid)
            if entry is None:  # a video the format has no place for (counted in the plan)
                continue
            rel = _file_name(fmt, entry, frame)
            _write_file(out / rel, _as_png(images[j], f"{vid}#{frame}"))
            for k, v in (("file", rel), ("video_id", vid), ("frame_index", frame), ("split", split),
                         ("source", source), ("label", int(label)), ("method", method), ("group", group)):
                cols[k].append(v)
        del t, images  # before the next row group is read
    return pa.table({
        "file": pa.array(cols["file"], pa.string()), "video_id": pa.array(cols["video_id"], pa.string()),
        "frame_index": pa.array(cols["frame_index"], pa.int64()), "split": pa.array(cols["split"], pa.string()),
        "source": pa.array(cols["source"], pa.string()), "label": pa.array(cols["label"], pa.int8()),
        "method": pa.array(cols["method"], pa.string()), "group": pa.array(cols["group"], pa.string()),
    })


# --- the stage -------------------------------------------------------------------------------------
def _options(params: dict) -> dict:
    """The format's options: the checked parameters less the output folder."""
    return {k: v for k, v in params.items() if k != "out"}


def _checker(fmt: str):
    def check(raw: dict) -> dict:
        raw = dict(raw)
        out, p = _check(fmt, raw.pop("out", None), raw)
        return {"out": out, **p}

    return check


def _identify_for(fmt: str):
    def identify(work: Work, params: dict) -> tuple[dict, dict]:
        """The format, its options and the output folder; the shards must be those of the split on record."""
        out = params["out"]
        marker = _check_out(work, out, fmt)
        _check_shards_current(work)
        context = {"format": fmt, "out": out, "marker": marker, "shards": work.state("shards")["fingerprint"]}
        return {"format": fmt, "out": str(out), **_options(params)}, context

    return identify


def _fresh(run: StageRun) -> bool:
    """Up to date only while the output folder holds this export, complete, with every file it listed."""
    fmt, out, marker = run.context["format"], run.context["out"], run.context["marker"]
    if not (marker and marker.get("fingerprint") == run.fingerprint and marker.get("complete")):
        return False
    missing = [f for f in _listed_files(out, fmt) if not (out / f).exists()]
    if missing:
        log.warning("export %s: %d file(s) of %s are gone (e.g. %s): exporting again", fmt, len(missing), out,
                    missing[0])
        return False
    return True


def _plan(run: StageRun) -> list[Unit]:
    """Claim the output folder (replacing an export of other inputs), then one unit per shard file."""
    work, fp, ctx = run.work, run.fingerprint, run.context
    fmt, out, marker, p = ctx["format"], ctx["out"], ctx["marker"], _options(run.params)
    if marker is None or marker.get("fingerprint") != fp:
        if marker is not None:
            log.info("export %s: %s holds an export of other inputs or options: replacing it", fmt, out)
            for child in out.iterdir():
                if child.is_dir():
                    storage.remove_tree(child)
                else:
                    child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / MARKER, {"format": fmt, "fingerprint": fp, "complete": False, "work": str(work.root),
                                     "path_prefix": p.get("path_prefix")})
    rows, by_file = _rows(work)
    plan, skipped = (_plan_deepfakebench(work, rows, p) if fmt == "deepfakebench" else _plan_imagefolder(rows))
    del rows
    for what, n in skipped.items():
        log.warning("export %s: %d video(s) of %s left out: DeepfakeBench has no dataset for them", fmt, n, what)
    ctx["plan"], ctx["skipped"] = plan, skipped
    return [Unit(f"{run.stage.name}:{storage.relative(f, work.root)}", {
        "shard": f, "out": str(out), "format": fmt, "plan": {v: plan[v] for v in sorted(vids) if v in plan}})
        for f, vids in sorted(by_file.items()) if vids]


def _before_map(run: StageRun) -> None:
    """Temp files of a killed run go; a unit whose files have gone (an export replaced or deleted)
    would be skipped: drop its part."""
    out = run.context["out"]
    for tmp in out.rglob(".*.tmp"):  # left by a killed run (one export per work dir at a time)
        tmp.unlink(missing_ok=True)
    for part in run.parts.dir.glob("*.parquet"):
        try:
            gone = any(not (out / f).exists() for f in pq.read_table(part, columns=["file"])["file"].to_pylist())
        except (pa.ArrowException, OSError):
            gone = True
        if gone:
            part.unlink()


def _combine(run: StageRun) -> Output:
    """The index files (JSON or CSV, README), the report, and the folder's marker saying it is complete."""
    work, ctx = run.work, run.context
    fmt, out, plan, skipped, p = ctx["format"], ctx["out"], ctx["plan"], ctx["skipped"], _options(run.params)
    table = run.parts.table()
    order = pa.array([MODES.index(s) for s in table["split"].to_pylist()], pa.int8())
    table = table.append_column("_mode", order).sort_by(
        [("_mode", "ascending"), ("video_id", "ascending"), ("frame_index", "ascending")]).drop_columns(["_mode"])
    files = _write_index(out, fmt, p, table, plan)
    report = _report(work, run.stage, run.fingerprint, out, p, table, plan, skipped, files)
    atomic.write_json(out / MARKER, {"format": fmt, "fingerprint": run.fingerprint, "complete": True,
                                     "work": str(work.root), "path_prefix": p.get("path_prefix"), "index": files,
                                     "images": table.num_rows})
    counts = {"images": table.num_rows, "videos": len(set(table["video_id"].to_pylist())),
              **run.parts.summary, "skipped_videos": sum(skipped.values())}
    return Output(report=report, counts=counts)


def run(work: Work, fmt: str, out, params: dict | None = None, *, workers: int = 1, executor=None) -> dict:
    """Export the benchmark's originals of train/val/test to `out` in format `fmt`; return the stage state."""
    out, p = _check(fmt, out, params or {})
    return run_stage(work, STAGES[fmt], {"out": out, **p}, workers=workers, executor=executor)


def _listed_files(out: Path, fmt: str) -> list[str]:
    """Every file the export in `out` wrote, from its index (JSON lists or CSV)."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return [MARKER]
    listed = list(marker.get("index", []))
    if fmt == "imagefolder":
        with open(out / "metadata.csv", newline="") as f:
            listed += [r["file"] for r in csv.DictReader(f)]
    else:
        prefix = marker.get("path_prefix", "")
        for name in marker.get("index", []):
            if name.startswith("dataset_json/"):
                for path in _json_frames(json.loads((out / name).read_text())):
                    listed.append(path[len(prefix) + 1:] if prefix and path.startswith(prefix + "/") else path)
    return listed


def _json_frames(doc) -> list[str]:
    if isinstance(doc, dict):
        if "frames" in doc and isinstance(doc["frames"], list):
            return list(doc["frames"])
        return [f for v in doc.values() for f in _json_frames(v)]
    return []


# --- the index files ------------------------------------------------------------------------------
def _write_index(out: Path, fmt: str, p: dict, table: pa.Table, plan: dict) -> list[str]:
    if fmt == "deepfakebench":
        files = _write_deepfakebench(out, p, table, plan)
    else:
        files = _write_imagefolder(out, table)
    names = [Path(f).stem for f in files if f.startswith("dataset_json/")]
    atomic.write_bytes(out / "README.md", _readme(fmt, p, table, plan, names).encode())
    return [*files, "README.md"]


def _write_deepfakebench(out: Path, p: dict, table: pa.Table, plan: dict) -> list[str]:
    frames: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for vid, frame, rel in zip(table["video_id"].to_pylist(), table["frame_index"].to_pylist(),
                               table["file"].to_pylist()):
        frames[vid].append((frame, f"{p['path_prefix']}/{rel}"))
    docs: dict[str, dict] = {}
    levels: dict[str, set] = defaultdict(set)  # dataset -> compression levels held
    for vid, e in plan.items():
        for name in e["datasets"]:
            if e["compression"]:
                levels[name].add(e["compression"])
    for vid, e in sorted(plan.items()):
        if vid not in frames:
            continue
        entry = {"label": e["label_name"], "frames": [path for _, path in sorted(frames[vid])]}
        for name in e["datasets"]:
            doc = docs.setdefault(name, {})
            labels = doc.setdefault(e["label_name"], {m: ({c: {} for c in sorted(levels[name])} if name in COMPRESSED
                                                           else {}) for m in MODES})
            where = labels[e["mode"]][e["compression"]] if name in COMPRESSED else labels[e["mode"]]
            where[_slug(e["key"])] = entry
    for name in set(_FF_SUBSETS.values()) & set(docs):  # a per-method subset only where its fakes are held
        if set(docs[name]) <= {"FF-real"}:
            del docs[name]
    written = []
    for name, doc in sorted(docs.items()):
        rel = f"dataset_json/{name}.json"
        atomic.write_bytes(out / rel, (json.dumps({name: doc}, indent=1, sort_keys=False) + "\n").encode())
        written.append(rel)
    return written


_CSV_COLUMNS = ["file", "split", "label", "label_name", "source", "method", "video_id", "frame_index", "group"]
_CSV_BATCH_ROWS = 65_536


def _write_imagefolder(out: Path, table: pa.Table) -> list[str]:
    """metadata.csv, written a batch of rows at a time (not a Python dict per image at once)."""
    with atomic.atomic_path(out / "metadata.csv") as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        for batch in table.to_batches(max_chunksize=_CSV_BATCH_ROWS):
            for r in batch.to_pylist():
                w.writerow({**{k: r[k] for k in _CSV_COLUMNS if k in r}, "label_name": LABEL_NAMES[r["label"]]})
    return ["metadata.csv"]


def _readme(fmt: str, p: dict, table: pa.Table, plan: dict, datasets: list[str]) -> str:
    n, n_videos = table.num_rows, len(set(table["video_id"].to_pylist()))
    if fmt == "imagefolder":
        return f"""# mesodata benchmark as an image folder

{n} face crops (256x256 PNG) of {n_videos} videos: `<split>/<real|fake>/<source>__<video>__<frame>.png`,
the originals of mesodata's leak-free train/val/test split (no augmented copies). `metadata.csv`
has a row per image: file, split, label (1 = fake, 0 = real), label_name, source, method,
video_id, frame_index and group (the unit the split kept whole).

```python
from torchvision.datasets import ImageFolder
train = ImageFolder("train")   # classes ['fake', 'real'] in ImageFolder's alphabetical order:
                               # class_to_idx == {{'fake': 0, 'real': 1}}; mesodata's label is the reverse
```
"""
    levels = sorted({e["compression"] for e in plan.values() if e["compression"]})
    per_video = max((len(v) for v in _group(table).values()), default=0)
    fewest = min((len(v) for v in _group(table).values()), default=0)
    train_sets = [d for d in ("FaceForensics++", "DeepFakeDetection", "Celeb-DF-v2", "DFDCP", "DFDC") if d in datasets]
    return f"""# mesodata benchmark for DeepfakeBench

{n} face crops (256x256 PNG) of {n_videos} videos in DeepfakeBench's layout: the originals of
mesodata's leak-free, deduplicated train/val/test split, whatever `mesodata split` was run with.

## Use it

1. Place this folder at `datasets/mesodata` in your DeepfakeBench checkout (frame paths begin with
   `{p['path_prefix']}/`, which DeepfakeBench opens as given, relative to its repository root; run
   its scripts from that root).
2. In `training/config/train_config.yaml` and `test_config.yaml` (or a detector's config):

```yaml
dataset_json_folder: './datasets/mesodata/dataset_json'
lmdb: false
compression: {levels[0] if levels else 'c23'}          # the FF++ level held here: {', '.join(levels) or 'none'}
frame_num: {{'train': {per_video}, 'test': {per_video}}}   # at most {per_video} frames per video are here
train_dataset: {train_sets}
test_dataset: {train_sets}
```

Dataset names (`dataset_json/<name>.json`): {', '.join(f'`{d}`' for d in datasets)}. Label names are
DeepfakeBench's own (`label_dict` of `train_config.yaml`). Modes: `train`, `val`, `test` are
mesodata's splits, so a video is in exactly one of them across every dataset, and no identity,
source clip or duplicate crosses them (DeepfakeBench's own lists leak identities).

## What differs from DeepfakeBench's preprocessing

- Faces are Viola-Jones (OpenCV Haar cascade) crops, squared with a margin and resized to 256x256,
  checked by dlib's HOG detector; not DeepfakeBench's dlib crops of aligned faces.
- No landmarks and no masks: keep `with_landmark: false` and `with_mask: false` (detectors that need
  them, e.g. those using landmarks or blending masks, cannot train on this export).
- The frames are mesodata's evenly spaced samples after deduplication, so videos hold
  {per_video} frames at most, and crops with no face or duplicated across videos are absent.
- Frame files are named by their frame index in the video (`<index>.png`).
- Videos hold {fewest} to {per_video} frames. Current DeepfakeBench takes every frame of a video with
  fewer than `frame_num`; its first loader did not (it then needs `frame_num` below {fewest}).
"""


def _group(table: pa.Table) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for vid, f in zip(table["video_id"].to_pylist(), table["frame_index"].to_pylist()):
        out[vid].append(f)
    return out


def _report(work: Work, stage: Stage, fp: str, out: Path, p: dict, table: pa.Table, plan: dict,
            skipped: dict, files: list[str]) -> dict:
    counts: dict[tuple, int] = defaultdict(int)
    for split, source, label in zip(table["split"].to_pylist(), table["source"].to_pylist(), table["label"].to_pylist()):
        counts[(split, source, label)] += 1
    size = sum((out / f).stat().st_size for f in table["file"].to_pylist())
    return {
        "artifact": "mesodata export", "format": stage.params["format"], "out": str(out), "params": p,
        "fingerprint": fp, "stage_version": stage.version,
        "upstream": {"split": (work.state("split") or {}).get("fingerprint")},
        "images": table.num_rows, "videos": len(set(table["video_id"].to_pylist())), "bytes": size,
        "index": files, "skipped_videos": skipped,
        "counts": [{"split": s, "source": src, "label": int(lab), "images": n}
                   for (s, src, lab), n in sorted(counts.items(), key=lambda kv: (MODES.index(kv[0][0]), kv[0][1], kv[0][2]))],
    }


def print_report(report: dict) -> None:
    from ..report import print_table

    print_table(f"Export {report['format']} -> {report['out']}", report["counts"],
                ["split", "source", "label", "images"])
    print(f"{report['images']} images of {report['videos']} videos, {report['bytes'] / 1e6:.1f} MB; "
          f"index: {', '.join(report['index'])}")


STAGES = {fmt: StageDef(
    f"export-{fmt}", VERSION, upstream=("split",), title=f"export {fmt}", check=_checker(fmt),
    identify=_identify_for(fmt), fresh=_fresh, plan=_plan, unit=_export_shard,
    parts_key=lambda run: f"{run.fingerprint}:{run.context['shards']}", before_map=_before_map,
    combine=_combine, print_report=print_report,
    up_to_date=lambda st, p: f"up to date in {p['out']} ({st['counts']['images']} images), nothing to do")
    for fmt in FORMATS}
