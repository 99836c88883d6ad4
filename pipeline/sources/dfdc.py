"""DFDC: the preview set (dataset.json) and/or the full release (dfdc_train_part_*/metadata.json)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .base import Listing, assign_groups, config, list_videos, read_csv, read_json, row, safe_join

NAME = "dfdc"
_LABELS = {"real": 0, "fake": 1}
_SPLITS = {"train": "train", "test": "test", "val": "val", "validation": "val"}


def _label(value, origin: str) -> int:
    label = _LABELS.get(str(value).strip().lower())
    if label is None:
        raise UserError(f"{origin}: label must be REAL or FAKE, got {value!r}")
    return label


def _entries(path: Path) -> dict:
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object keyed by video path")
    for key, value in meta.items():
        if not isinstance(value, dict):
            raise UserError(f"{path}: entry {key!r} is not an object")
        if "label" not in value:
            raise UserError(f"{path}: entry {key!r} has no 'label'")
    return meta


def _preview(root: Path, data_root: Path, meta_path: Path, out: Listing) -> None:
    base = meta_path.parent
    listed = set()
    for key, v in _entries(meta_path).items():
        path = safe_join(base, key, str(meta_path))
        listed.add(path)
        label = _label(v["label"], f"{meta_path}: {key}")
        parts = Path(key).parts
        method = "original" if label == 0 else (parts[0] if len(parts) > 1 else "fake")
        target = v.get("target_id") or (parts[1] if len(parts) > 2 else None)
        swapped = v.get("swapped_id")
        if swapped is None and label == 1:
            swapped = Path(key).name.split("_", 1)[0]
        links = [f"actor:{a}" for a in (target, swapped) if a not in (None, "")]
        split = _SPLITS.get(str(v.get("set", "")).lower())
        out.rows.append(row(NAME, root, data_root, path, label=label, method=method, links=links,
                            official_split=split))
    _unlisted(root, data_root, [p for p in base.rglob("*.mp4") if p not in listed], out)


def _part(root: Path, data_root: Path, meta_path: Path, out: Listing) -> None:
    folder = meta_path.parent
    meta = _entries(meta_path)
    for name, v in meta.items():
        path = safe_join(folder, name, str(meta_path))
        label = _label(v["label"], f"{meta_path}: {name}")
        original = v.get("original")
        family = original if (label == 1 and original) else name
        split = _SPLITS.get(str(v.get("split", "")).lower())
        out.rows.append(row(NAME, root, data_root, path, label=label, method="original" if label == 0 else "dfdc",
                            links=[f"family:{folder.name}/{family}"], official_split=split))
    _unlisted(root, data_root, [p for p in list_videos(folder) if p.name not in meta], out)


def _label_set(root: Path, data_root: Path, csv_path: Path, split: str, out: Listing) -> None:
    listed = set()
    for n, rec in enumerate(read_csv(csv_path, ["filename", "label"]), 2):
        path = safe_join(csv_path.parent, rec["filename"], f"{csv_path}:{n}")
        if rec["label"].strip() not in ("0", "1"):
            raise UserError(f"{csv_path}:{n}: label must be 0 or 1, got {rec['label']!r}")
        listed.add(path)
        out.rows.append(row(NAME, root, data_root, path, label=int(rec["label"]),
                            method="original" if rec["label"].strip() == "0" else "dfdc",
                            links=[], official_split=split))
    _unlisted(root, data_root, [p for p in list_videos(csv_path.parent) if p not in listed], out)


def _unlisted(root: Path, data_root: Path, files: list[Path], out: Listing) -> None:
    for p in sorted(files):
        out.rows.append(row(NAME, root, data_root, p, label=None, method="unknown", links=[],
                            status="unlisted", error="on disk but absent from the metadata; no label"))


def list_source(root: Path, data_root: Path, **options) -> Listing:
    cfg = config(NAME)
    out = Listing()
    previews = [root / m for m in cfg["preview"]["metadata"] if (root / m).is_file()]
    parts = sorted(root.glob(cfg["full"]["parts_glob"]))
    label_sets = {s: root / p for s, p in cfg["full"]["label_sets"].items() if (root / p).is_file()}
    if not (previews or parts or label_sets):
        raise UserError(f"dfdc root {root} holds neither dataset.json (preview) nor "
                        "dfdc_train_part_*/metadata.json (full release)")
    for meta_path in previews:
        _preview(root, data_root, meta_path, out)
    for meta_path in parts:
        _part(root, data_root, meta_path, out)
    for split, csv_path in label_sets.items():
        _label_set(root, data_root, csv_path, split, out)
    if previews:
        out.expected["preview"] = cfg["preview"]["expected"]
    if parts or label_sets:
        out.expected["full"] = cfg["full"]["expected"]
    assign_groups(out.rows)
    return out
