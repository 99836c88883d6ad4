"""Score videos with a trained run: sample frames, crop faces, score each crop, average per video.

Frame sampling and face cropping belong to the pipeline (`pipeline.stages.faces.extract_faces`,
returning one row per sampled frame with `image`, `frame_index`, `status`). Until that lands this
module uses a small stand-in with the same contract (`_fallback_extract_faces`); `extract_faces`
below is the one switch point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pyarrow as pa
import torch

from pipeline.errors import UserError

from .data import decode_image, to_tensor
from .infer import load_weights
from .svm import load_svm, svm_scores

__all__ = ["VIDEO_EXTS", "find_videos", "extract_faces", "load_run_scorer", "predict_videos", "Prediction"]

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def find_videos(path: str | Path) -> list[Path]:
    """A video file, or every video under a folder (recursively), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        vids = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
        if vids:
            return vids
        raise UserError(f"no videos ({', '.join(VIDEO_EXTS)}) under {path}")
    raise UserError(f"no such file or folder: {path}")


def _fallback_extract_faces(video_path: str | Path, params: dict) -> pa.Table:
    """Stand-in for the pipeline's face stage: `frames` evenly spaced frames, the largest Haar
    face per frame, a square box enlarged by `margin`, resized to 256x256 and PNG-encoded."""
    n_frames, margin = int(params.get("frames", 10)), float(params.get("margin", 1.3))
    cap = cv2.VideoCapture(str(video_path))
    if not cap.isOpened():
        raise UserError(f"cannot open video {video_path}")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
    wanted = sorted(set(np.linspace(0, max(total - 1, 0), num=min(n_frames, max(total, 1))).round().astype(int)))
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    rows: dict[str, list] = {"image": [], "frame_index": [], "status": []}
    index, k = 0, 0
    while k < len(wanted):
        ok, frame = cap.read()  # sequential reads: exact frame indices without seeking
        if not ok:
            break
        if index == wanted[k]:
            k += 1
            gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            faces = cascade.detectMultiScale(gray, 1.1, 5, minSize=(40, 40))
            if len(faces) == 0:
                rows["image"].append(None)
                rows["frame_index"].append(index)
                rows["status"].append("no_face")
            else:
                x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
                cx, cy, half = x + w / 2, y + h / 2, margin * max(w, h) / 2
                src = np.float32([[cx - half, cy - half], [cx + half, cy - half], [cx - half, cy + half]])
                dst = np.float32([[0, 0], [255, 0], [0, 255]])
                crop = cv2.warpAffine(frame, cv2.getAffineTransform(src, dst), (256, 256),
                                      flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
                rows["image"].append({"bytes": cv2.imencode(".png", crop)[1].tobytes(),
                                      "path": f"{Path(video_path).name}#{index}"})
                rows["frame_index"].append(index)
                rows["status"].append("ok")
        index += 1
    cap.release()
    if k < len(wanted):  # frames the container promised but did not deliver
        for i in wanted[k:]:
            rows["image"].append(None)
            rows["frame_index"].append(int(i))
            rows["status"].append("unreadable")
    return pa.table(rows, schema=pa.schema([
        pa.field("image", pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])),
        pa.field("frame_index", pa.int64()), pa.field("status", pa.string())]))


def extract_faces(video_path: str | Path, params: dict) -> pa.Table:
    """The switch: the pipeline's face stage when it is importable, else the stand-in."""
    try:
        from pipeline.stages.faces import extract_faces as pipeline_extract
    except ImportError:
        return _fallback_extract_faces(video_path, params)
    return pipeline_extract(video_path, params)


def load_run_scorer(run_dir: str | Path, model: str | None = None) -> tuple[str, Callable[[torch.Tensor], np.ndarray]]:
    """(model name, function: image batch -> P(fake)-like scores in [0, 1]) for a run folder.
    Default model: MesoInception-4 + SVM when the run has svm.skops, else the best net present."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no run folder at {run_dir}")
    has = {f.name for f in run_dir.iterdir()}
    available = [m for m, needs in (("mesoinception4+svm", {"svm.skops", "mesoinception4.pt"}),
                                    ("mesoinception4", {"mesoinception4.pt"}), ("meso4", {"meso4.pt"}))
                 if needs <= has]
    if not available:
        raise UserError(f"no trained model in {run_dir}: run `mesodata train-detector` first")
    model = model or available[0]
    if model not in available:
        raise UserError(f"model {model!r} is not in {run_dir}; it has {', '.join(available)}")
    net, _ = load_weights(run_dir / f"{model.removesuffix('+svm')}.pt")
    if model.endswith("+svm"):
        import json

        head = load_svm(run_dir / "svm.skops")
        cfg = json.loads((run_dir / "metrics.json").read_text()).get("config", {}) \
            if (run_dir / "metrics.json").is_file() else {}
        kind = cfg.get("svm_features", "hidden16")

        @torch.no_grad()
        def score(x: torch.Tensor) -> np.ndarray:
            feats = net.hidden_features(x) if kind == "hidden16" else net.flat_features(x)
            return svm_scores(head, feats.numpy())[1]
    else:
        @torch.no_grad()
        def score(x: torch.Tensor) -> np.ndarray:
            return torch.sigmoid(net(x)).numpy().astype(np.float64)
    return model, score


@dataclass
class Prediction:
    video: str
    score: float | None  # mean frame score; None when no frame had a face
    label: str | None  # "fake" / "real"
    frames_scored: int
    frames_sampled: int
    frame_scores: list[float]


def predict_videos(videos: list[Path], run_dir: str | Path, model: str | None = None,
                   params: dict | None = None, batch_size: int = 32) -> tuple[str, list[Prediction], dict]:
    """Score each video; returns (model, predictions, timing with videos/s and frames/s)."""
    name, score = load_run_scorer(run_dir, model)
    params = params or {}
    preds, n_frames, t0 = [], 0, time.perf_counter()
    for video in videos:
        table = extract_faces(video, params)
        ok = [r["bytes"] for r, s in zip(table["image"].to_pylist(), table["status"].to_pylist())
              if s == "ok" and r is not None]
        scores: list[float] = []
        for i in range(0, len(ok), batch_size):
            x = torch.stack([to_tensor(decode_image(b)) for b in ok[i:i + batch_size]])
            scores.extend(score(x).tolist())
        n_frames += len(ok)
        mean = float(np.mean(scores)) if scores else None
        preds.append(Prediction(str(video), mean, None if mean is None else ("fake" if mean >= 0.5 else "real"),
                                len(scores), table.num_rows, [round(s, 6) for s in scores]))
    dt = max(time.perf_counter() - t0, 1e-9)
    return name, preds, {"seconds": dt, "videos_per_s": len(videos) / dt, "frames_per_s": n_frames / dt}
