"""Helpers (no tests): a faces-like table from real crops, and manifests, until the faces stage lands.

The faces stage writes per-video Parquet parts under WORK/faces/ (one row per sampled frame: video_id,
frame_index, timestamp, image struct<bytes, path> PNG 256x256 or null, bbox, status, source, label,
method, group) and records state `faces`; these helpers write exactly that, from real footage.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mesodata.pipeline import atomic, footage, schema
from mesodata.pipeline.runner import Stage, Work, part_name

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


@functools.cache
def _cascade():
    return cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")


def face_box(rgb: np.ndarray):
    faces = _cascade().detectMultiScale(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 1.1, 4, minSize=(40, 40))
    return tuple(int(x) for x in max(faces, key=lambda b: b[2] * b[3])) if len(faces) else None


def crop(rgb: np.ndarray, box, margin: float = 1.3, size: int = 256) -> np.ndarray:
    """A square crop `margin` times the box side around its centre (reflected at borders), size x size."""
    x, y, w, h = box
    side = int(round(max(w, h) * margin))
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    big = cv2.copyMakeBorder(rgb, side, side, side, side, cv2.BORDER_REFLECT)
    c = big[y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side]
    return cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC)


def face_crops(frames, *, keep_box: bool = True) -> list[np.ndarray | None]:
    """One crop per frame around its largest Haar face (the last box when none is found)."""
    out, last = [], None
    for f in frames:
        b = face_box(f)
        b = b if b is not None else (last if keep_box else None)
        last = b
        out.append(crop(f, b) if b is not None else None)
    return out


read_frames = footage.read_frames


def png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def faces_part(video: dict) -> pa.Table:
    """A faces part for one video: {video_id, source, label, method, group, crops: [array|None|bytes]}."""
    crops = video["crops"]
    idx = video.get("frame_index") or list(range(len(crops)))
    images, status = [], []
    for c in crops:
        if c is None:
            images.append(None); status.append("no_face")
        else:
            images.append({"bytes": c if isinstance(c, bytes) else png(c), "path": None}); status.append("face")
    n = len(crops)
    return pa.table({
        "video_id": pa.array([video["video_id"]] * n, pa.string()),
        "frame_index": pa.array(idx, pa.int64()),
        "timestamp": pa.array([i / 25.0 for i in idx], pa.float64()),
        "image": pa.array(images, IMAGE),
        "bbox": pa.array([[0, 0, 256, 256] if c is not None else None for c in crops], pa.list_(pa.int32())),
        "status": pa.array(status, pa.string()),
        "source": pa.array([video["source"]] * n, pa.string()),
        "label": pa.array([video["label"]] * n, pa.int8()),
        "method": pa.array([video["method"]] * n, pa.string()),
        "group": pa.array([video["group"]] * n, pa.string()),
    })


def write_faces(work: Work, videos: list[dict], tag: str = "fixture") -> None:
    """WORK/faces/<part>.parquet per video, the index of those parts (faces/_index.json, in the videos'
    order) and the `faces` stage state, as the faces stage leaves them."""
    outputs, index = [], []
    for v in videos:
        rel = f"faces/{part_name(v['video_id'])}"
        table = faces_part(v)
        atomic.write_parquet(work.path(rel), table)
        outputs.append(rel)
        index.append({"video_id": v["video_id"], "key": v["video_id"], "part": part_name(v["video_id"]),
                      "rows": table.num_rows})
    atomic.write_json(work.path("faces", "_index.json"), {"parts": index})
    outputs.append("faces/_index.json")
    work.record(Stage("faces", "fixture", {"tag": tag}, upstream=("manifest",)), outputs,
                {"videos": len(videos)})


def write_manifest(work: Work, rows: list[dict], tag: str = "fixture") -> None:
    """manifest.parquet from partial rows (defaults: status ok, official_split null) and its state."""
    full = []
    for r in rows:
        full.append({"path": r["video_id"] + ".mp4", "compression": None, "official_split": None,
                     "status": "ok", "error": None, **r})
    t = pa.Table.from_pylist(full, schema=schema.load("manifest"))
    atomic.write_parquet(work.path("manifest.parquet"), schema.conform(t, "manifest"))
    work.record(Stage("manifest", "fixture", {"tag": tag}), ["manifest.parquet"], {"videos": len(rows)})


def write_dataset(work: Work, videos: list[dict], tag: str = "fixture") -> None:
    """Manifest + faces for `videos` (each as for faces_part, plus optional status / official_split)."""
    write_manifest(work, [{k: v[k] for k in ("video_id", "source", "label", "method", "group")}
                          | {k: v[k] for k in ("status", "official_split") if k in v} for v in videos], tag)
    write_faces(work, [v for v in videos if v.get("status", "ok") == "ok"], tag)


def read_manifest_table(work: Work) -> pa.Table:
    return pq.read_table(work.path("manifest.parquet"))


_SAMPLE_WORK: dict[str, Path] = {}


def sample_work(sample_root: Path, dest: Path, every: int = 8) -> Path:
    """A work dir with the real manifest stage run on the sample and faces crops of every ok video
    (every `every`-th frame, Haar face, 256x256 PNG), built once per session. Read-only: copy it."""
    key = str(sample_root)
    if key not in _SAMPLE_WORK:
        from mesodata.pipeline.stages import manifest

        work = Work(dest)
        manifest.run(work, sample_root, ["celebdf", "dfdc", "ff++"], workers=1)
        rows = pq.read_table(work.path("manifest.parquet")).to_pylist()
        videos = []
        for r in rows:
            if r["status"] != "ok":
                continue
            frames = read_frames(sample_root / r["path"])
            idx = list(range(0, len(frames), every))
            videos.append({**{k: r[k] for k in ("video_id", "source", "label", "method", "group")},
                           "crops": face_crops([frames[i] for i in idx], keep_box=False), "frame_index": idx})
        write_faces(work, videos)
        _SAMPLE_WORK[key] = Path(dest)
    return _SAMPLE_WORK[key]


def deduped_copy(sample_root: Path, tmp_path_factory, name: str) -> Work:
    """A fresh copy of `sample_work` with the real dedupe stage run on it."""
    from mesodata.pipeline.stages import dedupe

    src = sample_work(sample_root, tmp_path_factory.mktemp("sample_work") / "work")
    dst = tmp_path_factory.mktemp(name) / "work"
    shutil.copytree(src, dst)
    work = Work(dst)
    dedupe.run(work, {}, workers=1)
    return work


def write_dedupe(work: Work, rows: list[dict], tag: str = "fixture") -> None:
    """dedupe.parquet from partial rows (video_id, frame_index, kept, cluster, cluster_videos ...)."""
    full = [{"source": None, "label": None, "method": None, "group": None, "pixel_hash": None, "phash": None,
             "cluster": None, "cluster_size": 1, "cluster_videos": 1, "cluster_sources": 1, "kept": True,
             "reason": "unique", "error": None, **r} for r in rows]
    t = pa.Table.from_pylist(full, schema=schema.load("dedupe"))
    atomic.write_parquet(work.path("dedupe.parquet"), schema.conform(t, "dedupe"))
    work.record(Stage("faces", "fixture", {"tag": tag}, upstream=("manifest",)), [], {})
    work.record(Stage("dedupe", "fixture", {"tag": tag}, upstream=("faces",)), ["dedupe.parquet"], {"crops": len(rows)})


def with_shared_intro(src: Path, dest: Path) -> Work:
    """A copy of a manifest + faces work dir (e.g. `sample_work`) in which every video with a face crop
    also opens with the same two-frame intro: the astronaut's face under a slow pan, graded a little
    brighter in each video (so no two videos share pixels, only pHashes). Real dedupe then finds one
    cross-video cluster linking every video, as a channel ident or a shared title card would: single
    linkage joins all the groups into one."""
    shutil.copytree(src, dest)
    work = Work(dest)
    intro = [c for c in face_crops(footage.pan(footage.astronaut(), 2, (320, 320), seed=3)) if c is not None]
    assert len(intro) == 2
    parts = sorted(p for p in (dest / "faces").glob("*.parquet"))
    videos = []
    for k, part in enumerate(parts):
        t = pq.read_table(part).to_pylist()
        crops = [r["image"]["bytes"] if r["image"] else None for r in t]
        if any(c is not None for c in crops):
            crops += [np.clip(c.astype(np.int16) + 1 + k, 0, 255).astype(np.uint8) for c in intro]
        idx = [r["frame_index"] for r in t] + [10_000, 10_001][:len(crops) - len(t)]
        videos.append({**{c: t[0][c] for c in ("video_id", "source", "label", "method", "group")},
                       "crops": crops, "frame_index": idx})
        part.unlink()
    write_faces(work, videos, tag="intro")
    return work
