"""Detection metrics on a frame table (one row per image: label, score, video_id, source, ...).

`score` is a probability-like value in [0, 1] with threshold 0.5 (the nets' sigmoid; the SVM's
decision value passed through a sigmoid, so 0.5 <=> decision 0). Ranking metrics (AUC, AP, EER)
only depend on the order of scores. Label 1 = fake is the positive class.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn import metrics as skm

__all__ = ["equal_error_rate", "binary_metrics", "video_frame", "grouped_metrics", "evaluate_frame"]


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): the error rate where the false-positive rate equals the false-negative
    rate, linearly interpolated between the two ROC points that bracket the crossing."""
    fpr, tpr, thr = skm.roc_curve(labels, scores)
    fnr = 1 - tpr
    diff = fnr - fpr  # decreasing along the curve: starts at 1, ends at -1
    i = int(np.argmax(diff <= 0))  # first point at or past the crossing
    if i == 0:
        return float(fpr[0]), float(thr[0])
    d0, d1 = diff[i - 1], diff[i]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    th = thr[i - 1] + t * (thr[i] - thr[i - 1]) if np.isfinite(thr[i - 1]) else thr[i]
    return float(eer), float(th)


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    """ACC, AUC, EER, AP, per-class precision/recall/F1, confusion matrix and ROC points."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    pred = (scores >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    out: dict = {"n": int(len(labels)), "n_fake": int(labels.sum()), "n_real": int((1 - labels).sum()),
                 "acc": float(skm.accuracy_score(labels, pred)) if len(labels) else math.nan}
    if both:
        out["auc"] = float(skm.roc_auc_score(labels, scores))
        out["ap"] = float(skm.average_precision_score(labels, scores))
        out["eer"], out["eer_threshold"] = equal_error_rate(labels, scores)
        fpr, tpr, _ = skm.roc_curve(labels, scores)
        out["roc"] = {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist()}
    else:  # AUC and friends are undefined with one class; say so instead of crashing
        out.update(auc=None, ap=None, eer=None, eer_threshold=None, roc=None)
    p, r, f, s = skm.precision_recall_fscore_support(labels, pred, labels=[0, 1], zero_division=0)
    out["per_class"] = {name: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                               "support": int(s[k])} for k, name in enumerate(("real", "fake"))}
    out["confusion"] = skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist()  # rows true, cols pred
    return out


def video_frame(frames: pd.DataFrame) -> pd.DataFrame:
    """One row per `video_id`: mean frame score, the video's label and frame count. A video whose
    frames disagree on the label is a data bug and raises."""
    g = frames.groupby("video_id", sort=True)
    labels = g["label"].agg(["min", "max"])
    bad = labels.index[labels["min"] != labels["max"]]
    if len(bad):
        raise ValueError(f"video {bad[0]!r} has frames with both labels")
    keep = [c for c in ("source", "method") if c in frames.columns]
    out = g.agg(score=("score", "mean"), label=("label", "first"), frames=("score", "size"),
                **{c: (c, "first") for c in keep})
    return out.reset_index()


def grouped_metrics(frames: pd.DataFrame, by: str) -> dict[str, dict]:
    """Frame metrics per value of column `by` (source, method, augmentation), without ROC points."""
    out = {}
    for key, part in frames.groupby(by, sort=True):
        m = binary_metrics(part["label"].to_numpy(), part["score"].to_numpy())
        m.pop("roc")
        out[str(key)] = m
    return out


def evaluate_frame(frames: pd.DataFrame) -> dict:
    """Everything for one model on one split: frame level, video level and breakdowns.

    Per-method numbers compare each manipulation against all real frames of the same table
    (a method alone holds only one class, which has no AUC)."""
    res = {"frame": binary_metrics(frames["label"].to_numpy(), frames["score"].to_numpy())}
    videos = video_frame(frames)
    res["video"] = binary_metrics(videos["label"].to_numpy(), videos["score"].to_numpy())
    res["video"]["n_videos"] = int(len(videos))
    if "source" in frames:
        res["per_source"] = grouped_metrics(frames, "source")
    if "method" in frames:
        real = frames[frames["label"] == 0]
        per = {}
        for method, part in frames[frames["label"] == 1].groupby("method", sort=True):
            both = pd.concat([real, part])
            m = binary_metrics(both["label"].to_numpy(), both["score"].to_numpy())
            m.pop("roc")
            per[str(method)] = m
        res["per_method"] = per
    return res
