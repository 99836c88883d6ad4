"""Score videos with a trained run: sample frames, crop faces, score each crop, average per video.

Frame sampling and face cropping are the pipeline's (`pipeline.stages.faces.extract_faces`: one row
per sampled frame with `image`, `frame_index`, `status`; status "face" carries a crop), so a video
is seen exactly as the benchmark's training crops were made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from mesodata.pipeline.errors import UserError

from mesodata.pipeline import cells

from .data import IMAGE_SIZE, to_tensor
from .infer import load_weights, run_models
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


def extract_faces(video_path: str | Path, params: dict) -> pa.Table:
    """Sampled frames of one video with their 256x256 face crops: the pipeline's faces stage
    (same sampling, Viola-Jones crop and verification as the benchmark's shards)."""
    from mesodata.pipeline.stages.faces import extract_faces as pipeline_extract

    return pipeline_extract(str(video_path), params)


def load_run_scorer(run_dir: str | Path, model: str | None = None) -> tuple[str, Callable[[torch.Tensor], np.ndarray]]:
    """(model name, function: image batch -> P(fake)-like scores in [0, 1]) for a run folder.
    Only the models and files the run's metrics.json records are used. Default model:
    MesoInception-4 + SVM when the run has it, else MesoInception-4, else Meso-4."""
    metrics, available = run_models(run_dir)
    model = model or next(iter(available))
    if model not in available:
        raise UserError(f"model {model!r} is not in {run_dir}; it has {', '.join(available)}")
    net, _ = load_weights(available[model]["weights"])
    if model.endswith("+svm"):
        head = load_svm(available[model]["head"])
        kind = metrics["models"][model].get("svm", {}).get("features") \
            or metrics.get("config", {}).get("svm_features", "hidden16")

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
    status: str = "ok"  # else the manifest's status for such a file: unreadable, missing
    error: str | None = None  # why, in the words `mesodata build` uses (its probe's)

    @property
    def verdict(self) -> str:
        if self.status != "ok":
            return f"{self.status}: {self.error}"
        return "no face found" if self.score is None else f"{self.score:.3f} {self.label}"


def check_video(video: str | Path) -> dict:
    """The pipeline's probe of `video` (status ok, unreadable or missing, and why): a file that is
    not a readable video is said to be so, exactly as `mesodata build` records it."""
    from mesodata.pipeline.probe import probe

    return probe(str(video))


def predict_videos(videos: list[Path], run_dir: str | Path, model: str | None = None,
                   params: dict | None = None, batch_size: int = 32) -> tuple[str, list[Prediction], dict]:
    """Score each video; returns (model, predictions, timing with videos/s and frames/s)."""
    probed = {str(v): check_video(v) for v in videos}
    if len(videos) == 1 and probed[str(videos[0])]["status"] != "ok":
        info = probed[str(videos[0])]
        raise UserError(f"{videos[0]} is {info['status']}: {info['error']}")
    name, score = load_run_scorer(run_dir, model)
    params = params or {}
    preds, n_frames, t0 = [], 0, time.perf_counter()
    for video in videos:
        info = probed[str(video)]
        if info["status"] != "ok":
            preds.append(Prediction(str(video), None, None, 0, 0, [], info["status"], info["error"]))
            continue
        table = extract_faces(video, params)
        ok = [r["bytes"] for r, s in zip(table["image"].to_pylist(), table["status"].to_pylist())
              if s == "face" and r is not None]
        scores: list[float] = []
        for i in range(0, len(ok), batch_size):
            x = torch.stack([to_tensor(cells.decode(b, IMAGE_SIZE)) for b in ok[i:i + batch_size]])
            scores.extend(score(x).tolist())
        n_frames += len(ok)
        mean = float(np.mean(scores)) if scores else None
        preds.append(Prediction(str(video), mean, None if mean is None else ("fake" if mean >= 0.5 else "real"),
                                len(scores), table.num_rows, [round(s, 6) for s in scores]))
    dt = max(time.perf_counter() - t0, 1e-9)
    return name, preds, {"seconds": dt, "videos_per_s": len(videos) / dt, "frames_per_s": n_frames / dt}
