"""The SVM head on its own: grid choice on val, stratified cap, skops save/load, refusal of
untrusted types; and the run's input checks that need no training."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from mesodata.detector.run import parse_models, train_and_evaluate
from tests.fixtures.samples import write_sample_shards
from mesodata.detector.svm import fit_svm_head, load_svm, save_svm, stratified_subsample, svm_scores
from mesodata.pipeline.errors import UserError


def _features(n, seed):
    """A ring: fakes inside radius 1, reals outside — separable by an RBF kernel, not linearly."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 16))
    r = np.linalg.norm(X[:, :2], axis=1)
    return X, (r < 1.1).astype(np.int8)


def test_fit_picks_grid_point_by_val_auc_and_round_trips(tmp_path):
    Xt, yt = _features(400, 0)
    Xv, yv = _features(200, 1)
    fit = fit_svm_head(Xt, yt, Xv, yv, grid={"C": (0.01, 10.0), "gamma": (0.001, 0.1)})
    assert len(fit.grid_) == 4
    assert fit.best_["val_auc"] == max(r["val_auc"] for r in fit.grid_)
    assert fit.best_["val_auc"] > 0.8  # a ring needs the RBF kernel
    d, p = svm_scores(fit.pipeline_, Xv)
    assert roc_auc_score(yv, d) == pytest.approx(fit.best_["val_auc"])
    assert np.all((p >= 0.5) == (d >= 0))  # sigmoid keeps the SVM's own boundary at 0.5
    save_svm(fit.pipeline_, tmp_path / "svm.skops")
    loaded = load_svm(tmp_path / "svm.skops")
    np.testing.assert_allclose(loaded.decision_function(Xv), d)


def test_stratified_subsample_keeps_proportions():
    y = np.array([0] * 900 + [1] * 100)
    idx = stratified_subsample(y, 200, seed=0)
    assert len(idx) == 200 and y[idx].sum() == 20 and len(set(idx)) == 200
    assert len(stratified_subsample(y, 5000)) == 1000


def test_cap_applies_to_the_training_rows():
    Xt, yt = _features(300, 0)
    Xv, yv = _features(100, 1)
    fit = fit_svm_head(Xt, yt, Xv, yv, grid={"C": (1.0,), "gamma": ("scale",)}, max_train=120)
    assert fit.n_train_ == 120


def test_load_refuses_untrusted_types(tmp_path):
    # A pipeline with a function transformer wrapping an arbitrary callable: not a plain SVM head.
    pipe = make_pipeline(FunctionTransformer(np.exp), StandardScaler(), SVC())
    pipe.fit(np.random.default_rng(0).normal(size=(20, 3)), [0, 1] * 10)
    path = tmp_path / "bad.skops"
    path.write_bytes(sio.dumps(pipe))
    with pytest.raises(UserError, match="trusted"):
        load_svm(path)


def test_single_class_train_is_a_user_error():
    X = np.zeros((10, 16))
    with pytest.raises(UserError, match="both real and fake"):
        fit_svm_head(X, np.zeros(10), X, np.r_[np.zeros(5), np.ones(5)])


def test_model_list_is_checked():
    assert parse_models("meso4, mesoinception4+svm") == ["meso4", "mesoinception4+svm"]
    with pytest.raises(UserError, match="unknown model"):
        parse_models("meso4,xception")


def test_source_filters_that_match_nothing_are_user_errors(tmp_path):
    write_sample_shards(tmp_path, videos={"train": 1, "val": 1, "test": 1}, frames=2, perturbed=())
    with pytest.raises(UserError, match="no train rows"):
        train_and_evaluate(tmp_path, train_sources=["celebdf"])
    with pytest.raises(UserError, match="no test rows"):
        train_and_evaluate(tmp_path, test_sources=["dfdc"])
    with pytest.raises(UserError, match="svm-features"):
        train_and_evaluate(tmp_path, svm_features="pixels")


def test_cross_dataset_run_tests_only_on_the_held_out_source(tmp_path):
    """--train-sources srcA --test-sources srcB: the test metrics cover srcB's frames and nothing else."""
    from mesodata.detector.train import TrainConfig

    rows = write_sample_shards(tmp_path, videos={"train": 2, "val": 2, "test": 2}, frames=2, perturbed=())
    metrics = train_and_evaluate(tmp_path, "cross", ["meso4"], TrainConfig(epochs=1, workers=0),
                                 train_sources=["srcA"], test_sources=["srcB"])
    test = metrics["models"]["meso4"]["test"]
    assert set(test["per_source"]) == {"srcB"}
    assert test["frame"]["n"] == test["per_source"]["srcB"]["n"] == rows["test"] // 2
    assert metrics["config"]["train_sources"] == ["srcA"]
