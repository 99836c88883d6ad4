"""What did not make it into the benchmark, frame by frame: every sampled frame that is not a kept
face crop, with its video, index, status and reason, and a contact sheet to look at them.

Statuses: the faces stage's `no_face`, `rejected`, `truncated`, `decode_error`, and `duplicate`
(a crop dedupe did not keep: its reason says exact or near, and the cluster).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import atomic, cells, storage
from .errors import UserError
from .runner import Work

__all__ = ["DROPPED_STATUSES", "dropped_frames", "counts_by_source", "write_csv", "contact_sheet"]

DROPPED_STATUSES = ("no_face", "rejected", "truncated", "decode_error", "duplicate")
_COLUMNS = ["video_id", "source", "method", "label", "frame_index", "status", "reason"]


def dropped_frames(work: Work, statuses=DROPPED_STATUSES, sources=None) -> pd.DataFrame:
    """One row per frame that is not in the benchmark, in manifest and frame order."""
    from .stages import dedupe, faces

    bad = [s for s in statuses if s not in DROPPED_STATUSES]
    if bad:
        raise UserError(f"unknown --status {bad[0]!r}: choose from {', '.join(DROPPED_STATUSES)}")
    meta = ["video_id", "source", "method", "label", "frame_index", "status", "error"]
    frames = faces.read(work, meta).to_pandas().rename(columns={"error": "reason"})
    frames["order"] = np.arange(len(frames))
    out = [frames[frames["status"] != "face"]]
    if "duplicate" in statuses:
        dd = dedupe.read(work, ["video_id", "frame_index", "kept", "reason", "cluster"]).to_pandas()
        dd = dd[~dd["kept"]]
        dd["reason"] = [f"{r.replace('_', ' ')} (cluster {c})" if c == c and c is not None else r.replace("_", " ")
                        for r, c in zip(dd["reason"], dd["cluster"])]
        dup = frames.drop(columns=["status", "reason"]).merge(dd[["video_id", "frame_index", "reason"]],
                                                              on=["video_id", "frame_index"])
        dup["status"] = "duplicate"
        out.append(dup)
    table = pd.concat(out, ignore_index=True).sort_values("order", kind="stable")
    table = table[table["status"].isin(statuses)]
    if sources:
        known = set(frames["source"])
        unknown = [s for s in sources if s not in known]
        if unknown:
            raise UserError(f"--source {unknown[0]!r} is not in this work dir; it holds {', '.join(sorted(known))}")
        table = table[table["source"].isin(sources)]
    table["reason"] = table["reason"].fillna("")
    table["frame_index"] = table["frame_index"].astype("Int64")  # null where no frame could be planned
    return table[_COLUMNS].reset_index(drop=True)


def counts_by_source(table: pd.DataFrame) -> list[dict]:
    """How many dropped frames each source has per status: rows of source, status, frames."""
    counts = table.groupby(["source", "status"]).size().rename("frames").reset_index()
    return counts.to_dict("records")


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Every row of `table` as CSV, written atomically."""
    atomic.write_bytes(path, table.to_csv(index=False).encode())
    return Path(path)


def _tile(row: dict, data_root, manifest: dict, parts: dict, size: int = 160) -> np.ndarray | None:
    """The picture of a dropped frame: its crop for a duplicate, else the decoded frame; None when
    the frame cannot be decoded (which is often why it was dropped)."""
    from PIL import Image

    if row["status"] == "duplicate":
        part = parts.get(row["video_id"])
        crops = storage.read_table(part, ["frame_index", "image"]).to_pylist() if part else []
        crop = next((r["image"] for r in crops if r["frame_index"] == row["frame_index"] and r["image"]), None)
        return None if crop is None else cells.decode(crop["bytes"], size)
    if pd.isna(row["frame_index"]) or row["video_id"] not in manifest:
        return None
    from .frames import FrameSampler

    sampler = FrameSampler(str(storage.join(data_root, manifest[row["video_id"]])), [int(row["frame_index"])])
    for f in sampler:
        img = f.frame.to_image()
        img.thumbnail((size, size))
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
        return np.asarray(canvas)
    return None


def contact_sheet(work: Work, table: pd.DataFrame, out: str | Path, limit: int = 24, cols: int = 6) -> Path:
    """A PNG of the first `limit` rows of `table`: each frame (or crop) captioned with its video,
    index, status and reason; a grey tile where the frame cannot be decoded."""
    from . import plots
    from .stages import faces
    from .stages import manifest as manifest_stage

    rows = table.head(limit).to_dict("records")
    if not rows:
        raise UserError("no frames match: nothing to put on a contact sheet")
    mstate = work.state("manifest") or {}
    data_root = storage.location(mstate.get("params", {}).get("data_root", "."))
    paths = manifest_stage.read(work).select(["video_id", "path"]).to_pydict()
    manifest = dict(zip(paths["video_id"], paths["path"]))
    parts = {e["video_id"]: work.path(faces.FOLDER, e["part"]) for e in faces.index(work)}
    images = [_tile(row, data_root, manifest, parts) for row in rows]
    fig = plots.dropped_sheet(rows, images, len(table), cols)
    out = Path(out)
    atomic.write_bytes(out, plots.png_bytes(fig))
    return out
