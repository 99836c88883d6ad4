"""The detector on the realistic fixture (tests/fixtures/realistic.py), end to end with the real
commands, and two studies of its defaults on the same shards.

    python tests/benchmarks/bench_realistic.py OUT [--scale small] [--seed 0] [--frames 4] \\
        [--what run,study,svmval] [--study-seeds 0,1] [--losses bce,mse] [--draws 50] [--run default]

run:   writes the fixture to OUT/data, then `mesodata build --workers 2 [--frames F]`,
       `mesodata split --seed S --workers 2`, `mesodata train-detector --epochs E` (every other
       option at its default) through the installed entry point; OUT/run.json + run.md: test
       frame / video AUC per model, with counts, seed and times.
study: on the same shards, MesoInception-4 (+ SVM head) per loss and seed, every epoch's weights
       kept: (a) the loss table — test AUC of the epoch selected on the full val split, as the
       product does; (b) val size — the same selection (epoch by val loss, SVM C and gamma by val
       AUC) redone on random halves and quarters of the val videos (stratified by label), how often
       it picks otherwise than the full val split and what that does to test AUC.
       OUT/study-<schedule>.json + .md (--lr-schedule: the schedule the study trains with).
svmval: the SVM head's val-size part alone, on a finished run's network (no training).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mesodata.detector.data import RowFilter, ShardDataset, require_shards
from mesodata.detector.run import _scored
from mesodata.detector.svm import DEFAULT_GRID
from mesodata.detector.train import TrainConfig, _val_loss, train_model

REPO = Path(__file__).resolve().parents[2]
MODELS = ("meso4", "mesoinception4", "mesoinception4+svm")


def _sh(args: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(args)}\n")
        fh.flush()
        subprocess.run(args, check=True, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    return time.perf_counter() - t0


def run_commands(out: Path, scale: str, seed: int, frames: int | None, epochs: int) -> dict:
    data, work, log = out / "data", out / "work", out / "commands.log"
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    if not (data / ".complete").exists():
        times["fixture_s"] = _sh([sys.executable, "-m", "tests.fixtures.realistic", str(data), "--scale", scale,
                                  "--seed", str(seed)], log)
        (data / ".complete").write_text("")
    build = ["mesodata", "build", "--data-root", str(data), "--work", str(work), "--workers", "2"]
    times["build_s"] = _sh(build + (["--frames", str(frames)] if frames else []), log)
    times["split_s"] = _sh(["mesodata", "split", "--work", str(work), "--seed", str(seed), "--workers", "2"], log)
    times["train_s"] = _sh(["mesodata", "train-detector", "--work", str(work), "--epochs", str(epochs),
                            "--overwrite"], log)
    m = json.loads((work / "detector/default/metrics.json").read_text())
    split = json.loads((work / "reports/split.json").read_text())
    rows = {}
    for name in MODELS:
        t = m["models"][name]["test"]
        ci = t.get("bootstrap", {})
        rows[name] = {"frame_auc": t["frame"]["auc"], "frame_auc_ci": ci.get("frame"),
                      "video_auc": t["video"]["auc"], "video_auc_ci": ci.get("video"),
                      "frame_bacc": t["frame"]["bacc"], "best_epoch": m["models"][name].get("best_epoch"),
                      "svm": m["models"][name].get("svm", {}).get("best")}
    result = {"fixture": {"scale": scale, "seed": seed}, "build_frames": frames or "default (32)",
              "epochs": epochs, "split_seed": seed, "data": m["data"], "models": rows, "times": times,
              "warnings": m.get("warnings", []), "split_report_keys": sorted(split)[:20],
              "load_average": os.getloadavg()}
    (out / "run.json").write_text(json.dumps(result, indent=1, default=str))
    md = [f"Realistic fixture ({scale}, seed {seed}), build --frames {frames or 32}, split --seed {seed}, "
          f"train-detector --epochs {epochs}; train {m['data']['train_frames']} rows "
          f"({m['data']['train_originals']} originals), val {m['data']['val_frames']}, "
          f"test {m['data']['test']['frames']} frames / {m['data']['test']['videos']} videos.", "",
          "| model | test frame AUC % [95 % CI] | video AUC % [95 % CI] | frame bACC % at 0.5 | selected |",
          "|---|---|---|---|---|"]

    def pct(x, ci):
        return f"{100 * x:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")

    for name, r in rows.items():
        sel = f"epoch {r['best_epoch']}" if r["best_epoch"] else f"C {r['svm']['C']}, gamma {r['svm']['gamma']}"
        md.append(f"| {name} | {pct(r['frame_auc'], r['frame_auc_ci'])} | {pct(r['video_auc'], r['video_auc_ci'])} | "
                  f"{100 * r['frame_bacc']:.1f} | {sel} |")
    (out / "run.md").write_text("\n".join(md) + "\n")
    print("\n".join(md), flush=True)
    return result


# --- the study --------------------------------------------------------------------------------
def _ds(work: Path, split: str, aug=("none",)) -> ShardDataset:
    return ShardDataset(require_shards(work, split), RowFilter(split=split, augmentations=aug))


def _auc(y, s) -> float:
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def _video_auc(frame: pd.DataFrame, score: np.ndarray) -> float:
    v = frame.assign(s=score).groupby("video_id").agg(label=("label", "first"), s=("s", "mean"))
    return _auc(v["label"], v["s"])


def _val_subsets(val: pd.DataFrame, fraction: float, draws: int, seed: int) -> list[np.ndarray]:
    """Row masks of `draws` random subsets holding `fraction` of each class's val videos."""
    if fraction >= 1:
        return [np.ones(len(val), bool)]
    vids = val.groupby("video_id")["label"].first()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        keep = []
        for label in (0, 1):
            ids = vids.index[vids == label].to_numpy()
            keep += list(rng.choice(ids, size=max(1, round(fraction * len(ids))), replace=False))
        out.append(val["video_id"].isin(keep).to_numpy())
    return out


def study_one(work: Path, cfg: TrainConfig) -> dict:
    """Train MesoInception-4 keeping every epoch; score train originals, val and test per epoch;
    fit the SVM grid per epoch. Returns what selection on any val subset needs."""
    train_all, train_orig, val, test = _ds(work, "train", None), _ds(work, "train"), _ds(work, "val"), _ds(work, "test")
    t0 = time.perf_counter()
    res = train_model(replace(cfg, model="mesoinception4"), train_all, val, keep_epochs=True)
    train_s = time.perf_counter() - t0
    dev = torch.device("cpu")
    epochs = []
    grid = list(itertools.product(DEFAULT_GRID["C"], DEFAULT_GRID["gamma"]))
    for state in res.epoch_states:
        res.model.load_state_dict(state)
        res.model.eval()
        ftr, Xtr = _scored(res.model, train_orig, cfg, dev, "hidden16")
        fv, Xv = _scored(res.model, val, cfg, dev, "hidden16")
        ft, Xt = _scored(res.model, test, cfg, dev, "hidden16")
        svm_val, svm_test = [], []
        for C, gamma in grid:  # the SVM head's grid, fitted as fit_svm_head fits it
            pipe = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=C, gamma=gamma)).fit(Xtr, ftr["label"].to_numpy())
            svm_val.append(pipe.decision_function(Xv))
            svm_test.append(pipe.decision_function(Xt))
        epochs.append({"val_logit": fv["logit"].to_numpy(), "test_logit": ft["logit"].to_numpy(),
                       "svm_val": svm_val, "svm_test": svm_test})
    return {"res": res, "train_s": train_s, "val": fv[["video_id", "label"]].reset_index(drop=True),
            "test": ft[["video_id", "label"]].reset_index(drop=True), "epochs": epochs, "grid": grid}


def select(run: dict, mask: np.ndarray, loss: str) -> dict:
    """The product's choices made on the val rows in `mask`: the epoch with the lowest val loss,
    then the first (C, gamma) with the highest val AUC on that epoch's features; their test AUCs."""
    yv = run["val"]["label"].to_numpy()[mask]
    losses = [_val_loss(e["val_logit"][mask], yv, loss) for e in run["epochs"]]
    k = int(np.argmin(losses))
    e = run["epochs"][k]
    aucs = [_auc(yv, d[mask]) for d in e["svm_val"]]
    g = int(np.nanargmax(aucs)) if not all(np.isnan(aucs)) else 0
    yt, test = run["test"]["label"].to_numpy(), run["test"]
    prob = 1 / (1 + np.exp(-e["test_logit"]))
    svm_prob = 1 / (1 + np.exp(-e["svm_test"][g]))
    return {"epoch": k + 1, "svm": run["grid"][g], "net_frame_auc": _auc(yt, prob), "net_video_auc": _video_auc(test, prob),
            "svm_frame_auc": _auc(yt, svm_prob), "svm_video_auc": _video_auc(test, svm_prob)}


def study(out: Path, seeds: list[int], losses: list[str], epochs: int, draws: int, lr_schedule: str = "dynamic") -> dict:
    work = out / "work"
    results = []
    for seed, loss in itertools.product(seeds, losses):  # seed by seed: a cut-short study still pairs the losses
        # one training process: keeping every epoch's weights needs it (the product's default,
        # processes auto, trains these shards in 2 data-parallel processes: same updates, other sums)
        run = study_one(work, TrainConfig(epochs=epochs, loss=loss, seed=seed, processes=1, lr_schedule=lr_schedule))
        full = select(run, np.ones(len(run["val"]), bool), loss)
        row = {"loss": loss, "seed": seed, "lr_schedule": lr_schedule, "train_s": run["train_s"], "product_best_epoch": run["res"].best_epoch,
               "val_frames": len(run["val"]), "val_videos": int(run["val"]["video_id"].nunique()),
               "full": full, "by_fraction": {}}
        for frac in (0.5, 0.25):
            picks = [select(run, m, loss) for m in _val_subsets(run["val"], frac, draws, seed)]
            row["by_fraction"][str(frac)] = {
                "draws": len(picks),
                "val_frames_median": statistics.median(int(m.sum()) for m in _val_subsets(run["val"], frac, draws, seed)),
                "epoch_differs": sum(p["epoch"] != full["epoch"] for p in picks) / len(picks),
                "svm_params_differ": sum(tuple(p["svm"]) != tuple(full["svm"]) for p in picks) / len(picks),
                **{f"{k}_{stat}": f(p[k] for p in picks) for k in ("net_frame_auc", "svm_frame_auc")
                   for stat, f in (("median", statistics.median), ("min", min), ("mean", statistics.fmean))}}
        results.append(row)
        print(json.dumps(row, default=str), flush=True)
        (out / f"study-{lr_schedule}.json").write_text(json.dumps(results, indent=1, default=str))
    md = ["| loss | seed | selected epoch | MesoInception-4 frame AUC % | video AUC % | + SVM frame AUC % | video AUC % | SVM C, gamma |",
          "|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r["full"]
        md.append(f"| {r['loss']} | {r['seed']} | {f['epoch']} | {100 * f['net_frame_auc']:.1f} | "
                  f"{100 * f['net_video_auc']:.1f} | {100 * f['svm_frame_auc']:.1f} | {100 * f['svm_video_auc']:.1f} | "
                  f"{f['svm'][0]}, {f['svm'][1]} |")
    md += ["", "| loss | seed | val | val frames (median) | epoch differs | SVM C,gamma differs | net frame AUC % median (min) | SVM frame AUC % median (min) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r["full"]
        md.append(f"| {r['loss']} | {r['seed']} | full | {r['val_frames']} | - | - | {100 * f['net_frame_auc']:.1f} | "
                  f"{100 * f['svm_frame_auc']:.1f} |")
        for frac, b in r["by_fraction"].items():
            md.append(f"| {r['loss']} | {r['seed']} | {frac} | {b['val_frames_median']} | {100 * b['epoch_differs']:.0f} % | "
                      f"{100 * b['svm_params_differ']:.0f} % | {100 * b['net_frame_auc_median']:.1f} "
                      f"({100 * b['net_frame_auc_min']:.1f}) | {100 * b['svm_frame_auc_median']:.1f} "
                      f"({100 * b['svm_frame_auc_min']:.1f}) |")
    (out / f"study-{lr_schedule}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md), flush=True)
    return {"results": results}


def svm_val_size(out: Path, run: str, draws: int, seed: int = 0) -> dict:
    """Val size for the SVM head alone, on a finished run's MesoInception-4 (no training): C and
    gamma chosen on the full val split vs on random halves / quarters of its videos."""
    from mesodata.detector import load_model

    work = out / "work"
    net = load_model(work / "detector" / run / "mesoinception4.pt")
    cfg = TrainConfig()
    dev = torch.device("cpu")
    ftr, Xtr = _scored(net, _ds(work, "train"), cfg, dev, "hidden16")
    fv, Xv = _scored(net, _ds(work, "val"), cfg, dev, "hidden16")
    ft, Xt = _scored(net, _ds(work, "test"), cfg, dev, "hidden16")
    grid = list(itertools.product(DEFAULT_GRID["C"], DEFAULT_GRID["gamma"]))
    svm_val, svm_test = [], []
    for C, gamma in grid:
        pipe = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=C, gamma=gamma)).fit(Xtr, ftr["label"].to_numpy())
        svm_val.append(pipe.decision_function(Xv))
        svm_test.append(pipe.decision_function(Xt))
    fake = {"val": fv[["video_id", "label"]].reset_index(drop=True), "test": ft[["video_id", "label"]].reset_index(drop=True),
            "grid": grid, "epochs": [{"val_logit": fv["logit"].to_numpy(), "test_logit": ft["logit"].to_numpy(),
                                      "svm_val": svm_val, "svm_test": svm_test}]}
    full = select(fake, np.ones(len(fv), bool), "bce")
    res = {"run": run, "val_frames": len(fv), "val_videos": int(fv["video_id"].nunique()), "full": full,
           "test_auc_per_grid_point": {f"{c},{g}": _auc(ft["label"], d) for (c, g), d in zip(grid, svm_test)}}
    for frac in (0.5, 0.25):
        masks = _val_subsets(fake["val"], frac, draws, seed)
        picks = [select(fake, m, "bce") for m in masks]
        res[str(frac)] = {"draws": len(picks), "val_frames_median": statistics.median(int(m.sum()) for m in masks),
                          "svm_params_differ": sum(tuple(p["svm"]) != tuple(full["svm"]) for p in picks) / len(picks),
                          "svm_frame_auc_median": statistics.median(p["svm_frame_auc"] for p in picks),
                          "svm_frame_auc_min": min(p["svm_frame_auc"] for p in picks),
                          "svm_frame_auc_max": max(p["svm_frame_auc"] for p in picks)}
    (out / f"svm-val-size-{run}.json").write_text(json.dumps(res, indent=1, default=str))
    print(json.dumps(res, default=str), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--scale", default="small")
    ap.add_argument("--seed", type=int, default=0, help="fixture and split seed")
    ap.add_argument("--frames", type=int, default=None, help="build --frames (default: the build's)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--what", default="run,study")
    ap.add_argument("--study-seeds", default="0,1")
    ap.add_argument("--losses", default="bce,mse")
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--lr-schedule", default="dynamic", help="the study's schedule")
    ap.add_argument("--run", default="default", help="with --what svmval: the run whose network to use")
    args = ap.parse_args()
    what = args.what.split(",")
    if "run" in what:
        run_commands(args.out, args.scale, args.seed, args.frames, args.epochs)
    if "svmval" in what:
        svm_val_size(args.out, args.run, args.draws)
    if "study" in what:
        torch.set_num_threads(2)
        study(args.out, [int(s) for s in args.study_seeds.split(",")], args.losses.split(","), args.epochs, args.draws,
              args.lr_schedule)


if __name__ == "__main__":
    main()
