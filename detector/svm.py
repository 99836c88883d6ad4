"""The RBF-SVM head on the trained network's features (MesoInception-4 + SVM).

Features are the 16-d hidden vector after LeakyReLU (`hidden16`, default) or the 1024-d flattened
trunk (`flat1024`). The head is scikit-learn's `Pipeline(StandardScaler(), SVC(kernel="rbf"))`;
C and gamma are chosen by validation AUC on a small grid. Large training sets are subsampled,
stratified by label, to `max_train` rows (kernel SVMs scale ~quadratically). Saved with skops,
never pickle; loading trusts an explicit list of types only.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mesodata.pipeline.errors import UserError
from mesodata.pipeline.progress import track

__all__ = ["SvmFit", "fit_svm_head", "stratified_subsample", "save_svm", "load_svm",
           "svm_scores", "DEFAULT_GRID", "MAX_TRAIN", "TRUSTED_TYPES"]

MAX_TRAIN = 20_000
DEFAULT_GRID = {"C": (0.1, 1.0, 10.0, 100.0), "gamma": ("scale", 0.01, 0.1, 1.0)}
# Everything a fitted Pipeline(StandardScaler, SVC) holds; skops refuses anything else on load.
TRUSTED_TYPES = [
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.svm._classes.SVC",
]


class SvmFit:
    """The chosen pipeline, the grid with its val AUCs, and the training size actually used."""

    def __init__(self, pipeline: Pipeline, grid: list[dict], n_train: int, features: str) -> None:
        self.pipeline_ = pipeline
        self.grid_ = grid
        self.n_train_ = n_train
        self.features = features

    @property
    def best_(self) -> dict:
        return max(self.grid_, key=lambda r: r["val_auc"])


def stratified_subsample(y: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """Indices of at most `cap` rows keeping the label proportions (all rows when under the cap)."""
    n = len(y)
    if n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        k = max(1, round(cap * len(idx) / n))
        keep.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(keep))


def fit_svm_head(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                 grid: dict | None = None, max_train: int = MAX_TRAIN, seed: int = 0,
                 features: str = "hidden16") -> SvmFit:
    """Fit the scaler+SVC for each (C, gamma) on train, keep the best by val AUC, return it."""
    if len(np.unique(y_train)) < 2:
        raise UserError("the SVM head needs both real and fake images in the train split")
    grid = grid or DEFAULT_GRID
    idx = stratified_subsample(np.asarray(y_train), max_train, seed)
    Xt, yt = X_train[idx], np.asarray(y_train)[idx]
    val_ok = len(np.unique(y_val)) == 2
    rows, best, best_auc = [], None, -np.inf
    points = list(itertools.product(grid["C"], grid["gamma"]))
    # a bar with an ETA on a terminal (each point is a kernel SVM fit), quiet otherwise
    for C, gamma in track(points, len(points), f"SVM head: C x gamma on {len(idx)} rows", "fit", leave=False):
        pipe = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=C, gamma=gamma))
        pipe.fit(Xt, yt)
        # Without both classes in val there is no AUC; fall back to the first grid point.
        auc = float(roc_auc_score(y_val, pipe.decision_function(X_val))) if val_ok else float("nan")
        rows.append({"C": C, "gamma": gamma, "val_auc": auc})
        if best is None or (val_ok and auc > best_auc):
            best, best_auc = pipe, auc
    return SvmFit(best, rows, len(idx), features)


def svm_scores(pipeline: Pipeline, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(decision values, sigmoid of them): the decision ranks for AUC; the sigmoid is a [0, 1]
    score whose 0.5 threshold is the SVM's own decision boundary."""
    d = pipeline.decision_function(X).astype(np.float64)
    return d, 1.0 / (1.0 + np.exp(-d))


def save_svm(pipeline: Pipeline, path: str | Path) -> None:
    """Write the pipeline with skops (no pickle), atomically."""
    import skops.io as sio

    from mesodata.pipeline.atomic import write_bytes

    write_bytes(path, sio.dumps(pipeline))


def load_svm(path: str | Path) -> Pipeline:
    """Load an SVM head with skops (no pickle): skops instantiates only types it trusts plus
    TRUSTED_TYPES; the result must then be exactly Pipeline(StandardScaler, SVC(rbf)), so a file
    with any other step (e.g. a FunctionTransformer around some callable) is refused."""
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no SVM head at {path}")
    data = path.read_bytes()
    untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES]
    if untrusted:
        raise UserError(f"{path} holds types outside the SVM head's trusted list: {untrusted}")
    try:
        pipe = sio.loads(data, trusted=TRUSTED_TYPES)
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file, one line for the user
        raise UserError(f"{path} is not a readable skops file ({type(exc).__name__}: {exc})") from exc
    steps = [type(step) for _, step in pipe.steps] if isinstance(pipe, Pipeline) else None
    if steps != [StandardScaler, SVC] or pipe.steps[1][1].kernel != "rbf":
        got = steps or type(pipe).__name__
        raise UserError(f"{path} holds something other than the trusted SVM head "
                        f"(expected Pipeline(StandardScaler, SVC(rbf)), got {got})")
    return pipe
