"""One detector run end to end: train the nets, fit the SVM head, evaluate on test (read once,
after all selection), robustness on test-perturbed, write WORK/detector/<run>/.

Train and val rows obey `train_sources`; test and test-perturbed rows obey `test_sources`
(cross-dataset evaluation = different lists). Train uses every augmentation in its shards; val and
test use the originals only; test-perturbed is broken down per augmentation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from mesodata.pipeline.atomic import write_json
from mesodata.pipeline.errors import UserError

from . import evaluate, report
from .data import RowFilter, ShardDataset, require_shards, shard_files
from .infer import FEATURE_KINDS, resolve_device, save_weights, score_loader
from .models import MODEL_NAMES, count_parameters
from .svm import MAX_TRAIN, fit_svm_head, save_svm, svm_scores
from .train import TrainConfig, make_loader, train_model

__all__ = ["ALL_MODELS", "parse_models", "train_and_evaluate"]

log = logging.getLogger("mesodata")
ALL_MODELS = ("meso4", "mesoinception4", "mesoinception4+svm")
SVM_BASE = "mesoinception4"


def parse_models(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in ALL_MODELS]
    if bad or not names:
        raise UserError(f"unknown model(s) {bad or text!r}: choose from {','.join(ALL_MODELS)}")
    return list(dict.fromkeys(names))


def _sources(text: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(text) if text else None


def _dataset(files, split: str, sources, augmentations=("none",)) -> ShardDataset:
    return ShardDataset(files, RowFilter(split=split, sources=sources, augmentations=augmentations))


def _nonempty(ds: ShardDataset, what: str) -> ShardDataset:
    if len(ds) == 0:
        raise UserError(f"no {what} rows match the filters (check --train-sources / --test-sources)")
    return ds


def _scored(model, ds, cfg: TrainConfig, device, features=None):
    # Scoring runs in fp32 (cheap next to training), so reported numbers match the ONNX export.
    loader = make_loader(ds, 64, cfg.workers, device)
    frame, X = score_loader(model, loader, device, features=features, channels_last=cfg.channels_last)
    frame["score"] = frame["prob"]
    return frame, X


def train_and_evaluate(work: str | Path, run: str = "default", models: Sequence[str] = ALL_MODELS,
                       cfg: TrainConfig = TrainConfig(), svm_features: str = "hidden16",
                       train_sources: Sequence[str] | None = None,
                       test_sources: Sequence[str] | None = None,
                       svm_max_train: int = MAX_TRAIN) -> dict:
    """Train, select on val, evaluate on test; write weights, svm.skops, metrics.json, report.md
    and plots to WORK/detector/<run>/. Returns the metrics dict (with "table", the comparison)."""
    work = Path(work)
    if svm_features not in FEATURE_KINDS:
        raise UserError(f"unknown --svm-features {svm_features!r}: use {' or '.join(FEATURE_KINDS)}")
    train_files, val_files, test_files = (require_shards(work, s) for s in ("train", "val", "test"))
    tr_src, te_src = _sources(train_sources), _sources(test_sources)
    train_ds = _nonempty(_dataset(train_files, "train", tr_src, augmentations=None), "train")
    val_ds = _nonempty(_dataset(val_files, "val", tr_src), "val")
    test_ds = _nonempty(_dataset(test_files, "test", te_src), "test")
    pert_files = shard_files(work, "test-perturbed")
    pert_ds = _dataset(pert_files, "test-perturbed", te_src, augmentations=None) if pert_files else None
    out = work / "detector" / run
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)

    nets = [m for m in MODEL_NAMES if m in models or (m == SVM_BASE and "mesoinception4+svm" in models)]
    metrics: dict = {"config": {**{k: v for k, v in vars(cfg).items()}, "models": list(models),
                                "svm_features": svm_features, "train_sources": list(tr_src or []),
                                "test_sources": list(te_src or []), "run": run},
                     "models": {}}
    trained = {}
    for name in nets:
        t0 = time.perf_counter()
        res = train_model(replace(cfg, model=name), train_ds, val_ds)
        trained[name] = res
        save_weights(res.model, name, out / f"{name}.pt")
        metrics["models"][name] = {"params": count_parameters(res.model), "history": res.history,
                                   "best_epoch": res.best_epoch, "lr_step": res.lr_step,
                                   "bn_momentum": res.config["bn_momentum"],
                                   "train_seconds": time.perf_counter() - t0, "weights": f"{name}.pt"}

    if "mesoinception4+svm" in models:
        net = trained[SVM_BASE].model
        # Features from the eval-mode net; train rows include their augmentations, as the net saw.
        _, Xtr = _scored(net, train_ds, cfg, device, svm_features)
        ytr = train_ds.labels()
        fval, Xval = _scored(net, val_ds, cfg, device, svm_features)
        fit = fit_svm_head(Xtr, ytr, Xval, fval["label"].to_numpy(), max_train=svm_max_train,
                           seed=cfg.seed, features=svm_features)
        save_svm(fit.pipeline_, out / "svm.skops")
        metrics["models"]["mesoinception4+svm"] = {
            "svm": {"features": svm_features, "n_train": fit.n_train_, "max_train": svm_max_train,
                    "grid": fit.grid_, "best": fit.best_}, "weights": f"{SVM_BASE}.pt", "head": "svm.skops"}
        trained["mesoinception4+svm"] = fit

    # The test split is read here, once per model, after every choice was made on val.
    for name in [m for m in ALL_MODELS if m in models]:
        entry = metrics["models"][name]
        for split_name, ds in (("test", test_ds), ("test-perturbed", pert_ds)):
            if ds is None or len(ds) == 0:
                continue
            frame = _score_model(name, trained, ds, cfg, device, svm_features)
            if split_name == "test":
                entry["test"] = evaluate.evaluate_frame(frame)
            else:
                entry["robustness"] = evaluate.grouped_metrics(frame, "augmentation")
    for name in list(metrics["models"]):
        if name not in models:  # mesoinception4 trained only as the SVM's base
            metrics["models"][name]["note"] = "trained as the SVM head's feature extractor"
    table = report.write_report(metrics, out)
    metrics["table"] = table
    write_json(out / "metrics.json", metrics)
    return metrics


def _score_model(name, trained, ds, cfg, device, svm_features):
    if name == "mesoinception4+svm":
        frame, X = _scored(trained[SVM_BASE].model, ds, cfg, device, svm_features)
        decision, prob = svm_scores(trained[name].pipeline_, X)
        frame["decision"], frame["score"] = decision, prob
        return frame
    frame, _ = _scored(trained[name].model, ds, cfg, device)
    return frame

