"""Measure the detector's options side by side on one work dir (e.g. the demo's): loss (bce / mse),
class balance (none / weights / sampler), lr schedule (dynamic / paper), and the SVM head fitted on
the train originals only or on every augmented copy. MesoInception-4 (+ SVM) per seed; prints one
JSON line per run and a table of medians over seeds.

    python tests/benchmarks/bench_detector_options.py --work mesodata-demo/work --epochs 8 \
        --seeds 0,1,2 --what loss,balance,schedule,svm
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import replace

import torch

from mesodata.detector import evaluate
from mesodata.detector.data import RowFilter, ShardDataset, require_shards
from mesodata.detector.run import _score_model, _scored, svm_training_set
from mesodata.detector.svm import fit_svm_head
from mesodata.detector.train import TrainConfig, train_model


def _ds(work, split, aug=("none",)):
    return ShardDataset(require_shards(work, split), RowFilter(split=split, augmentations=aug))


def _test(frame, val_frame):
    vv = evaluate.video_frame(val_frame)
    thr = {"frame": evaluate.choose_threshold(val_frame["label"], val_frame["score"]),
           "video": evaluate.choose_threshold(vv["label"], vv["score"])}
    t = evaluate.evaluate_frame(frame, thr)
    return {"frame_auc": t["frame"]["auc"], "video_auc": t["video"]["auc"], "frame_acc": t["frame"]["acc"],
            "frame_bacc": t["frame"]["bacc"], "frame_bacc_thr": t["frame"]["at_val_threshold"]["bacc"],
            "video_bacc_thr": t["video"]["at_val_threshold"]["bacc"]}


def run_one(work, cfg: TrainConfig, svm_rows: tuple[str, ...]) -> dict:
    train, val, test = _ds(work, "train", None), _ds(work, "val"), _ds(work, "test")
    dev = torch.device("cpu")
    t0 = time.perf_counter()
    res = train_model(replace(cfg, model="mesoinception4"), train, val)
    out = {"train_s": time.perf_counter() - t0, "best_epoch": res.best_epoch,
           "lr_plan": res.config.get("lr_plan")}
    trained = {"mesoinception4": res}
    out["net"] = _test(_score_model("mesoinception4", trained, test, cfg, dev, None),
                       _score_model("mesoinception4", trained, val, cfg, dev, None))
    fval, Xval = _scored(res.model, val, cfg, dev, "hidden16")
    for rows in svm_rows:
        ds = train if rows == "all" else _ds(work, "train")
        _, X, y = svm_training_set(res.model, ds, cfg, dev, "hidden16")
        fit = fit_svm_head(X, y, Xval, fval["label"].to_numpy(), seed=cfg.seed)
        trained["mesoinception4+svm"] = fit
        out[f"svm_{rows}"] = {**_test(_score_model("mesoinception4+svm", trained, test, cfg, dev, "hidden16"),
                                      _score_model("mesoinception4+svm", trained, val, cfg, dev, "hidden16")),
                              "n_train": fit.n_train_}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--what", default="loss,balance,schedule",
                    help="comma list of loss, mse, balance, sampler, schedule, svm")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = TrainConfig(epochs=args.epochs, workers=args.workers)
    variants = []
    what = args.what.split(",")
    if "loss" in what:
        variants += [("loss", "bce", replace(base, loss="bce")), ("loss", "mse", replace(base, loss="mse"))]
    if "mse" in what:  # the loss axis without the bce baseline (run separately)
        variants += [("loss", "mse", replace(base, loss="mse"))]
    if "balance" in what:
        variants += [("balance", b, replace(base, balance=b)) for b in ("weights", "sampler")]
    if "sampler" in what:
        variants += [("balance", "sampler", replace(base, balance="sampler"))]
    if "schedule" in what:
        variants += [("schedule", "paper", replace(base, lr_schedule="paper"))]
    svm_rows = ("originals", "all") if "svm" in what else ("originals",)
    if "svm" in what and not variants:
        variants = [("svm", "default", base)]
    results = []
    for axis, value, cfg in variants:
        for s in seeds:
            r = run_one(args.work, replace(cfg, seed=s), svm_rows)
            r.update(axis=axis, value=value, seed=s)
            results.append(r)
            print(json.dumps(r), flush=True)
    # medians over seeds
    print("\n| axis | value | net frame AUC | net video AUC | net bACC@thr | SVM frame AUC | train s |", file=sys.stderr)
    for axis, value, _ in variants:
        rs = [r for r in results if r["axis"] == axis and r["value"] == value]
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        print(f"| {axis} | {value} | {med(lambda r: r['net']['frame_auc']):.3f} | "
              f"{med(lambda r: r['net']['video_auc']):.3f} | {med(lambda r: r['net']['frame_bacc_thr']):.3f} | "
              f"{med(lambda r: r['svm_originals']['frame_auc']):.3f} | {med(lambda r: r['train_s']):.0f} |",
              file=sys.stderr)


if __name__ == "__main__":
    main()
