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

__all__ = ["equal_error_rate", "binary_metrics", "video_frame", "grouped_metrics", "evaluate_frame",
           "balanced_accuracy", "choose_threshold", "bootstrap_auc", "per_method_same_source",
           "THRESHOLD_RULE"]

THRESHOLD_RULE = ("the score threshold that maximises balanced accuracy on val (Youden's J), "
                  "at the midpoint between two adjacent val scores; ties go to the one nearest 0.5")


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
                 "acc": float(skm.accuracy_score(labels, pred)) if len(labels) else math.nan,
                 "bacc": balanced_accuracy(labels, pred),
                 "majority_share": float(max(labels.mean(), 1 - labels.mean())) if len(labels) else math.nan,
                 "pred_fake_share": float(pred.mean()) if len(labels) else math.nan}
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


def balanced_accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Mean of the per-class recalls over the classes present (= accuracy with one class)."""
    labels, pred = np.asarray(labels).astype(int), np.asarray(pred).astype(int)
    recalls = [float((pred[labels == c] == c).mean()) for c in (0, 1) if (labels == c).any()]
    return float(np.mean(recalls)) if recalls else math.nan


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """THRESHOLD_RULE: the threshold maximising balanced accuracy on (val) labels and scores; 0.5
    when the val set lacks a class."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(labels)) < 2:
        return 0.5
    u = np.unique(scores)
    cands = np.concatenate([[u[0] - 1e-9], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-9]]) if len(u) > 1 else u
    best, best_t = -1.0, 0.5
    for t in cands:
        b = balanced_accuracy(labels, scores >= t)
        if b > best + 1e-12 or (abs(b - best) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best, best_t = b, float(t)
    return best_t


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


def _with_videos(m: dict, part: pd.DataFrame) -> dict:
    m.pop("roc", None)
    m["n_videos"] = int(part["video_id"].nunique()) if "video_id" in part else None
    if "video_id" in part and len(part):
        v = video_frame(part)
        vm = binary_metrics(v["label"].to_numpy(), v["score"].to_numpy())
        m["video_auc"] = vm["auc"]
    return m


def per_method_same_source(frames: pd.DataFrame) -> dict[str, dict]:
    """The FF++ convention: each (source, fake method) against the real frames of the same source
    only (FF++ methods vs FF++ originals; Celeb-synthesis vs Celeb-real + YouTube-real; DFDC
    methods vs DFDC originals). Keys 'source/method'."""
    out = {}
    for (source, method), fakes in frames[frames["label"] == 1].groupby(["source", "method"], sort=True):
        real = frames[(frames["label"] == 0) & (frames["source"] == source)]
        both = pd.concat([real, fakes])
        m = binary_metrics(both["label"].to_numpy(), both["score"].to_numpy())
        out[f"{source}/{method}"] = _with_videos(m, both)
    return out


class _WeightedAuc:
    """AUC with per-row weights (ties count one half), for many weight vectors over the same
    scores: the scores are sorted once, each call is two bincounts and a cumulative sum."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
        self.order = order
        self.y = np.asarray(labels).astype(np.float64)[order]
        _, self.tie = np.unique(np.asarray(scores, dtype=np.float64)[order], return_inverse=True)
        self.n_tie = int(self.tie.max()) + 1 if len(order) else 0

    def __call__(self, weights: np.ndarray) -> float:
        w = np.asarray(weights, dtype=np.float64)[self.order]
        gp = np.bincount(self.tie, w * self.y, minlength=self.n_tie)
        gn = np.bincount(self.tie, w * (1 - self.y), minlength=self.n_tie)
        below = np.cumsum(gn) - gn
        den = gp.sum() * gn.sum()
        return float((gp * (below + 0.5 * gn)).sum() / den) if den else math.nan


def bootstrap_auc(frames: pd.DataFrame, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile bootstrap intervals for frame and video AUC, resampling videos (not frames) with
    replacement, separately within each class so both stay present; a frame counts as many times
    as its video is drawn."""
    videos = video_frame(frames)
    if len(np.unique(videos["label"])) < 2:
        return {"frame": None, "video": None, "n_boot": 0}
    rng = np.random.default_rng(seed)
    vid_index = {v: i for i, v in enumerate(videos["video_id"])}
    frame_vid = frames["video_id"].map(vid_index).to_numpy()
    vl = videos["label"].to_numpy().astype(int)
    f_auc = _WeightedAuc(frames["label"].to_numpy(), frames["score"].to_numpy())
    v_auc = _WeightedAuc(vl, videos["score"].to_numpy())
    groups = [np.flatnonzero(vl == c) for c in (0, 1)]
    f_aucs, v_aucs = [], []
    for _ in range(n_boot):
        counts = np.zeros(len(videos), np.float64)
        for g in groups:
            counts += np.bincount(rng.choice(g, size=len(g), replace=True), minlength=len(videos))
        f_aucs.append(f_auc(counts[frame_vid]))
        v_aucs.append(v_auc(counts))
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {"frame": [float(np.percentile(f_aucs, lo)), float(np.percentile(f_aucs, hi))],
            "video": [float(np.percentile(v_aucs, lo)), float(np.percentile(v_aucs, hi))],
            "n_boot": n_boot, "level": level, "resampled": "videos, within each class"}


def _at_threshold(labels: np.ndarray, scores: np.ndarray, t: float) -> dict:
    pred = (np.asarray(scores) >= t).astype(int)
    labels = np.asarray(labels).astype(int)
    return {"threshold": float(t), "acc": float((pred == labels).mean()) if len(labels) else math.nan,
            "bacc": balanced_accuracy(labels, pred), "pred_fake_share": float(pred.mean()) if len(pred) else math.nan}


def evaluate_frame(frames: pd.DataFrame, thresholds: dict | None = None, n_boot: int = 0,
                   seed: int = 0) -> dict:
    """Everything for one model on one split: frame level, video level and breakdowns.

    `thresholds` ({"frame": t, "video": t}, chosen on val) adds ACC / balanced ACC at those
    thresholds next to 0.5. `n_boot` > 0 adds video-resampled bootstrap intervals for AUC.
    Per method: each fake method against the same source's reals (`per_method`); the older
    comparison against every real frame of the table stays as `per_method_vs_all_reals`
    (cross-source: reals of other datasets included)."""
    res = {"frame": binary_metrics(frames["label"].to_numpy(), frames["score"].to_numpy())}
    videos = video_frame(frames)
    res["video"] = binary_metrics(videos["label"].to_numpy(), videos["score"].to_numpy())
    res["video"]["n_videos"] = int(len(videos))
    if thresholds:
        res["frame"]["at_val_threshold"] = _at_threshold(frames["label"], frames["score"], thresholds["frame"])
        res["video"]["at_val_threshold"] = _at_threshold(videos["label"], videos["score"], thresholds["video"])
    if n_boot:
        res["bootstrap"] = bootstrap_auc(frames, n_boot, seed)
    if "source" in frames:
        res["per_source"] = {k: _with_videos(m, frames[frames["source"] == k])
                             for k, m in grouped_metrics(frames, "source").items()}
    if "method" in frames and "source" in frames:
        res["per_method"] = per_method_same_source(frames)
    if "method" in frames:
        real = frames[frames["label"] == 0]
        per = {}
        for method, part in frames[frames["label"] == 1].groupby("method", sort=True):
            both = pd.concat([real, part])
            m = binary_metrics(both["label"].to_numpy(), both["score"].to_numpy())
            per[str(method)] = _with_videos(m, both)
        res["per_method_vs_all_reals"] = per
    return res
