"""Small benchmark shards made from a real face photograph, for tests and quick demos.

Real frames are jittered 256x256 crops of `skimage.data.astronaut()` (a real portrait). Fake frames
apply a real manipulation to the face region of the same kind of crop: the face is re-rendered at low
resolution ("rerender": down 4x, up again) or smoothed ("blur"), then blended back with a feathered
mask, as a face swap blends a generated face. Each video is a run of frames sharing one camera
(offset, zoom, brightness), so video-level grouping is meaningful.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["astronaut_face_crop", "write_sample_shards", "SHARDS_SCHEMA"]

SHARDS_SCHEMA = pa.schema([
    pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
    pa.field("label", pa.int8(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("frame_index", pa.int64(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("group", pa.string(), nullable=False),
    pa.field("augmentation", pa.string(), nullable=False),
    pa.field("aug_params", pa.string(), nullable=False),
])

# Face box of the astronaut portrait (x0, y0, x1, y1) in the 512x512 image.
_FACE = (165, 55, 305, 215)


def _portrait() -> np.ndarray:
    from skimage import data  # imported here: only the fixture needs scikit-image
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])  # RGB -> BGR for OpenCV


def astronaut_face_crop(rng: np.random.Generator, cam: dict | None = None) -> np.ndarray:
    """A 256x256 BGR crop around the astronaut's face with a camera jitter."""
    img = _portrait()
    cam = cam or {}
    x0, y0, x1, y1 = _FACE
    cx = (x0 + x1) / 2 + cam.get("dx", 0) + rng.normal(0, 2)
    cy = (y0 + y1) / 2 + cam.get("dy", 0) + rng.normal(0, 2)
    half = 1.3 * max(x1 - x0, y1 - y0) / 2 * cam.get("zoom", 1.0) * (1 + rng.normal(0, 0.01))
    src = np.float32([[cx - half, cy - half], [cx + half, cy - half], [cx - half, cy + half]])
    dst = np.float32([[0, 0], [255, 0], [0, 255]])
    crop = cv2.warpAffine(img, cv2.getAffineTransform(src, dst), (256, 256),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    crop = np.clip(crop.astype(np.float32) * cam.get("gain", 1.0) + rng.normal(0, 2, crop.shape), 0, 255)
    return crop.astype(np.uint8)


def _manipulate(crop: np.ndarray, method: str) -> np.ndarray:
    """Re-render the central face region and blend it back with a feathered elliptical mask."""
    if method == "rerender":
        small = cv2.resize(crop, (48, 48), interpolation=cv2.INTER_AREA)
        face = cv2.resize(small, (256, 256), interpolation=cv2.INTER_CUBIC)
    elif method == "blur":
        face = cv2.GaussianBlur(crop, (0, 0), 3.0)
    else:
        raise ValueError(f"unknown manipulation {method!r}")
    mask = np.zeros((256, 256), np.float32)
    cv2.ellipse(mask, (128, 132), (70, 88), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 8)[:, :, None]
    return (face * mask + crop * (1 - mask)).astype(np.uint8)


def _encode(img: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, img, [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
    assert ok
    return buf.tobytes()


def _perturb(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    if kind == "jpeg":
        q = 30
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR), {"quality": q}
    if kind == "noise":
        sigma = 8.0
        return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8), {"sigma": sigma}
    raise ValueError(kind)


def write_sample_shards(work: str | Path, videos: dict[str, int] | None = None, frames: int = 6,
                        sources: tuple[str, ...] = ("srcA", "srcB"), seed: int = 0,
                        rows_per_group: int = 16, rows_per_file: int = 48,
                        perturbed: tuple[str, ...] = ("jpeg", "noise")) -> dict[str, int]:
    """Write `WORK/shards/<split>/part-NNNNN.parquet` in the shards schema; return rows per split.

    `videos` maps split -> videos per class (default train 8, val 3, test 4); half the fake videos
    use each manipulation; sources alternate. `perturbed` adds a test-perturbed split holding the
    test frames under each named perturbation.
    """
    videos = videos or {"train": 8, "val": 3, "test": 4}
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    test_rows: list[dict] = []
    for split, per_class in videos.items():
        rows = []
        for label in (0, 1):
            for v in range(per_class):
                source = sources[v % len(sources)]
                method = "original" if label == 0 else ("rerender", "blur")[v % 2]
                vid = f"{source}/{split}/{'fake' if label else 'real'}{v:03d}"
                cam = {"dx": rng.uniform(-12, 12), "dy": rng.uniform(-12, 12),
                       "zoom": rng.uniform(0.9, 1.15), "gain": rng.uniform(0.85, 1.15)}
                for f in range(frames):
                    img = astronaut_face_crop(rng, cam)
                    if label:
                        img = _manipulate(img, method)
                    ext = ".jpg" if f % 3 == 2 else ".png"
                    rows.append(dict(img=img, ext=ext, label=label, source=source, method=method,
                                     video_id=vid, frame_index=f * 10, split=split, group=vid))
        order = rng.permutation(len(rows))
        rows = [rows[i] for i in order]
        if split == "test":
            test_rows = rows
        counts[split] = _write_split(Path(work), split, rows, rows_per_group, rows_per_file)
    if perturbed and test_rows:
        prow = []
        for kind in perturbed:
            for r in test_rows:
                img, params = _perturb(r["img"], kind, rng)
                prow.append({**r, "img": img, "split": "test-perturbed", "augmentation": kind,
                             "aug_params": json.dumps(params)})
        counts["test-perturbed"] = _write_split(Path(work), "test-perturbed", prow, rows_per_group, rows_per_file)
    return counts


def _write_split(work: Path, split: str, rows: list[dict], rows_per_group: int, rows_per_file: int) -> int:
    out = work / "shards" / split
    out.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, len(rows), rows_per_file)):
        chunk = rows[start:start + rows_per_file]
        table = pa.table({
            "image": [{"bytes": _encode(r["img"], r["ext"]),
                       "path": f"{r['video_id']}/{r['frame_index']:06d}{r['ext']}"} for r in chunk],
            "label": [r["label"] for r in chunk],
            "source": [r["source"] for r in chunk],
            "method": [r["method"] for r in chunk],
            "video_id": [r["video_id"] for r in chunk],
            "frame_index": [r["frame_index"] for r in chunk],
            "split": [r["split"] for r in chunk],
            "group": [r["group"] for r in chunk],
            "augmentation": [r.get("augmentation", "none") for r in chunk],
            "aug_params": [r.get("aug_params", "{}") for r in chunk],
        }, schema=SHARDS_SCHEMA)
        pq.write_table(table, out / f"part-{k:05d}.parquet", row_group_size=rows_per_group)
    return len(rows)
