"""Metrics checked against scikit-learn and hand-computed values; video-level grouping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mesodata.detector.evaluate import binary_metrics, equal_error_rate, evaluate_frame, video_frame


def _brute_eer(y, s):
    """EER by scanning every threshold: the point minimising |FPR - FNR|, averaged there."""
    best = None
    for t in np.unique(np.concatenate([s, [np.inf]])):
        pred = s >= t
        fpr = (pred & (y == 0)).sum() / (y == 0).sum()
        fnr = (~pred & (y == 1)).sum() / (y == 1).sum()
        if best is None or abs(fpr - fnr) < best[0]:
            best = (abs(fpr - fnr), (fpr + fnr) / 2)
    return best[1]


@pytest.mark.parametrize("y, s, eer", [
    ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 0.0),   # perfect
    ([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1], 1.0),   # perfectly wrong
    ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.5),   # FPR = FNR = 0.5 at threshold 0.3
    ([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.3, 0.8, 0.9], 1 / 3),
])
def test_eer_known_values(y, s, eer):
    assert equal_error_rate(np.array(y), np.array(s))[0] == pytest.approx(eer)


def test_eer_matches_brute_force_on_random_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    s = rng.normal(size=2000) + 0.8 * y
    # with 2000 distinct scores the interpolated crossing and the nearest threshold agree closely
    assert equal_error_rate(y, s)[0] == pytest.approx(_brute_eer(y, s), abs=2e-3)


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = np.clip(rng.random(300) * 0.7 + 0.3 * y, 0, 1)
    m = binary_metrics(y, s)
    pred = (s >= 0.5).astype(int)
    assert m["acc"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, s))
    assert m["ap"] == pytest.approx(skm.average_precision_score(y, s))
    assert m["confusion"] == skm.confusion_matrix(y, pred).tolist()
    p, r, f, sup = skm.precision_recall_fscore_support(y, pred)
    for k, name in enumerate(("real", "fake")):
        assert m["per_class"][name]["precision"] == pytest.approx(p[k])
        assert m["per_class"][name]["recall"] == pytest.approx(r[k])
        assert m["per_class"][name]["f1"] == pytest.approx(f[k])
        assert m["per_class"][name]["support"] == sup[k]
    fpr, tpr, _ = skm.roc_curve(y, s)
    assert np.allclose(m["roc"]["fpr"], fpr, atol=1e-6) and np.allclose(m["roc"]["tpr"], tpr, atol=1e-6)


def test_single_class_gives_no_auc_instead_of_crashing():
    m = binary_metrics(np.array([1, 1, 1]), np.array([0.9, 0.2, 0.7]))
    assert m["auc"] is None and m["eer"] is None
    assert m["acc"] == pytest.approx(2 / 3)


def test_video_level_means_frames_per_video_id():
    frames = pd.DataFrame({
        "video_id": ["a", "a", "a", "b", "b", "c"],
        "label":    [1, 1, 1, 0, 0, 0],
        "score":    [0.9, 0.2, 0.7, 0.1, 0.6, 0.4],
        "source":   ["s1"] * 6, "method": ["m", "m", "m", "orig", "orig", "orig"],
    })
    v = video_frame(frames).set_index("video_id")
    assert v.loc["a", "score"] == pytest.approx(0.6) and v.loc["a", "frames"] == 3
    assert v.loc["b", "score"] == pytest.approx(0.35)
    assert v.loc["c", "label"] == 0
    res = evaluate_frame(frames)
    assert res["video"]["n_videos"] == 3
    assert res["video"]["acc"] == pytest.approx(1.0)  # a: 0.6 fake, b: 0.35 real, c: 0.4 real
    assert res["frame"]["acc"] == pytest.approx(4 / 6)
    assert set(res["per_method"]) == {"s1/m"} and set(res["per_method_vs_all_reals"]) == {"m"}


def test_video_with_mixed_labels_is_an_error():
    frames = pd.DataFrame({"video_id": ["a", "a"], "label": [0, 1], "score": [0.1, 0.9]})
    with pytest.raises(ValueError, match="both labels"):
        video_frame(frames)


def test_balanced_accuracy_and_val_threshold():
    from mesodata.detector.evaluate import balanced_accuracy, choose_threshold

    y = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    assert balanced_accuracy(y, np.ones(10)) == pytest.approx(0.5)  # all-fake: 80 % ACC, 50 % bACC
    assert balanced_accuracy(y, y) == 1.0
    # val scores all above 0.5 but separable: the rule picks a threshold between the classes
    s = np.array([0.60, 0.62, 0.70, 0.71, 0.72, 0.80, 0.85, 0.90, 0.91, 0.95])
    t = choose_threshold(y, s)
    assert 0.62 < t < 0.70 and balanced_accuracy(y, s >= t) == 1.0
    assert choose_threshold(np.ones(4), np.array([0.1, 0.2, 0.3, 0.4])) == 0.5  # one class: no choice
    m = binary_metrics(y, np.full(10, 0.9))
    assert m["acc"] == pytest.approx(0.8) == m["majority_share"] and m["bacc"] == 0.5
    assert m["pred_fake_share"] == 1.0


def test_per_method_auc_against_the_same_sources_reals():
    """Source A is scored high overall, source B low: against all reals B's fakes look like chance,
    against B's own reals they are perfectly separated."""
    frames = pd.DataFrame({
        "video_id": ["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"],
        "source":   ["A", "A", "A", "A", "B", "B", "B", "B"],
        "method":   ["orig", "orig", "mA", "mA", "orig", "orig", "mB", "mB"],
        "label":    [0, 0, 1, 1, 0, 0, 1, 1],
        "score":    [0.80, 0.85, 0.90, 0.95, 0.05, 0.10, 0.20, 0.25],
    })
    res = evaluate_frame(frames)
    assert set(res["per_method"]) == {"A/mA", "B/mB"}
    assert res["per_method"]["B/mB"]["auc"] == 1.0 and res["per_method"]["B/mB"]["n"] == 4
    assert res["per_method"]["A/mA"]["auc"] == 1.0
    assert res["per_method_vs_all_reals"]["mB"]["auc"] == pytest.approx(0.5)  # cross-source, labelled so


def test_bootstrap_resamples_videos_not_frames():
    from mesodata.detector.evaluate import _WeightedAuc, bootstrap_auc

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 2)  # with ties
    w = rng.integers(0, 4, 500)
    assert _WeightedAuc(y, s)(w) == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w))
    # 12 videos of 50 identical frames each: frames add no information beyond their video, so the
    # frame-level interval must be as wide as the video-level one (resampling frames would shrink it)
    vid_scores = rng.random(12) + 0.4 * np.arange(12) % 2
    frames = pd.DataFrame({"video_id": np.repeat([f"v{i}" for i in range(12)], 50),
                           "label": np.repeat(np.arange(12) % 2, 50),
                           "score": np.repeat(vid_scores, 50)})
    ci = bootstrap_auc(frames, n_boot=300, seed=0)
    assert ci["frame"][1] - ci["frame"][0] == pytest.approx(ci["video"][1] - ci["video"][0], abs=1e-9)
    assert ci["video"][1] - ci["video"][0] > 0.2
    auc = skm.roc_auc_score(np.arange(12) % 2, vid_scores)
    assert ci["video"][0] <= auc <= ci["video"][1]


def test_report_warnings_flag_what_a_reviewer_would():
    """A degenerate model on a lopsided test split: each problem becomes a warning."""
    from mesodata.detector.report import warnings_for

    rng = np.random.default_rng(0)
    n_real, n_fake = 6, 14  # videos; 3 frames each
    vids = [f"ff/r{i}" for i in range(n_real)] + [f"ff/f{i}" for i in range(n_fake)] + ["cd/f0", "cd/f1"]
    labels = [0] * n_real + [1] * n_fake + [1, 1]
    frames = pd.DataFrame({"video_id": np.repeat(vids, 3), "label": np.repeat(labels, 3),
                           "source": np.repeat(["ff"] * (n_real + n_fake) + ["cd"] * 2, 3),
                           "method": np.repeat(["orig"] * n_real + ["m"] * (n_fake + 2), 3)})
    # scores: everything above 0.5 (one class predicted) and reals ranked above fakes (AUC < 0.5)
    frames["score"] = np.where(frames["label"] == 1, 0.6, 0.7) + rng.uniform(0, 0.01, len(frames))
    test = evaluate_frame(frames, {"frame": 0.5, "video": 0.5})
    counts = {"per_source": {"ff": {"real": {"videos": n_real}, "fake": {"videos": n_fake}},
                             "cd": {"fake": {"videos": 2}}}}
    metrics = {"data": {"test": counts}, "models": {"mesoinception4": {"test": test}}}
    w = "\n".join(warnings_for(metrics))
    assert "test source cd has fake videos only" in w
    assert "test source cd has 2 videos (< 10)" in w and "test source ff has" not in w
    assert "MesoInception-4: test frame AUC" in w and "below chance" in w
    assert "MesoInception-4: test frame accuracy 72.7 % equals the majority class share" in w
    assert "MesoInception-4: predicts fake for every test frame at threshold 0.5" in w
    assert "method cd/m has no real test frames in its source" in w
    # a sound model on the same split raises none of the model warnings
    frames["score"] = np.where(frames["label"] == 1, 0.8, 0.2) + rng.uniform(0, 0.01, len(frames))
    good = {"data": {"test": counts}, "models": {"mesoinception4": {"test": evaluate_frame(frames)}}}
    assert not [x for x in warnings_for(good) if x.startswith("MesoInception-4") and "cd/m" not in x]
