"""One detector run end to end: train the nets, fit the SVM head, evaluate on test (read once,
after all selection), robustness on test-perturbed, write WORK/detector/<run>/.

Train and val rows obey `train_sources`; test and test-perturbed rows obey `test_sources`
(cross-dataset evaluation = different lists). Train uses every augmentation in its shards; val and
test use the originals only; test-perturbed is broken down per augmentation. With several seeds,
each seed's run lands in WORK/detector/<run>/seed-<s>/ and WORK/detector/<run>/ gets the summary
(mean ± std over seeds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from mesodata.pipeline.atomic import write_json
from mesodata.pipeline.errors import UserError
from mesodata.pipeline.progress import track

from . import evaluate, report
from .data import RowFilter, ShardDataset, require_shards, shard_files
from .infer import FEATURE_KINDS, resolve_device, save_weights, score_loader
from .models import MODEL_NAMES, count_parameters
from .svm import MAX_TRAIN, fit_svm_head, save_svm, svm_scores
from .train import (BALANCES, CHECKPOINT_EVERY, LOSSES, LR_SCHEDULES, TrainConfig, choose_processes, make_loader,
                    train_model)

__all__ = ["ALL_MODELS", "SVM_TRAIN", "parse_models", "parse_seeds", "train_and_evaluate",
           "train_seeds", "svm_training_set", "shards_fingerprint", "run_request"]

log = logging.getLogger("mesodata")
ALL_MODELS = ("meso4", "mesoinception4", "mesoinception4+svm")
SVM_BASE = "mesoinception4"
# Rows the SVM head is fitted on: the train originals only (like val and test), or every
# augmented copy too (what the net was trained on).
SVM_TRAIN = ("originals", "all")
N_BOOT = 1000
# In an unfinished run's temp folder: the request it trains for and each net's checkpoint
# (seed-<s>/<net>.pt); removed before the run is renamed into place.
RESUME_DIR = ".resume"


def parse_models(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in ALL_MODELS]
    if bad or not names:
        raise UserError(f"unknown model(s) {bad or text!r}: choose from {','.join(ALL_MODELS)}")
    return list(dict.fromkeys(names))


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--seeds takes a comma list of integers, not {text!r}") from None
    if not seeds:
        raise UserError("--seeds is empty")
    return list(dict.fromkeys(seeds))


def _sources(text: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(text) if text else None


def _dataset(files, split: str, sources, augmentations=("none",)) -> ShardDataset:
    return ShardDataset(files, RowFilter(split=split, sources=sources, augmentations=augmentations))


def _nonempty(ds: ShardDataset, what: str) -> ShardDataset:
    if len(ds) == 0:
        raise UserError(f"no {what} rows match the filters (check --train-sources / --test-sources)")
    return ds


def _scored(model, ds, cfg: TrainConfig, device, features=None, desc: str | None = None):
    # Scoring runs in fp32 (cheap next to training), so reported numbers match the ONNX export.
    # Frame (ids, labels) and features come from the same batches: row i of one is row i of the other.
    loader = make_loader(ds, 64, cfg.workers, device)
    if desc is not None:  # a bar with an ETA on a terminal (pipeline.progress), quiet otherwise
        loader = track(loader, len(ds), desc, "img", weight=lambda batch: len(batch["label"]), leave=False)
    frame, X = score_loader(model, loader, device, features=features, channels_last=cfg.channels_last)
    frame["score"] = frame["prob"]
    return frame, X


def svm_training_set(net, ds: ShardDataset, cfg: TrainConfig, device, features: str):
    """(frame, X, y) for fitting the SVM head: features of every row of `ds` from the eval-mode
    net, with labels and ids taken from the very rows the features came from (whatever order the
    loader's workers and any shuffling produce)."""
    frame, X = _scored(net, ds, cfg, device, features)
    return frame, X, frame["label"].to_numpy().astype(int)


def _check_choices(cfg: TrainConfig, svm_features: str, svm_train: str) -> None:
    for value, allowed, flag in ((svm_features, FEATURE_KINDS, "--svm-features"), (svm_train, SVM_TRAIN, "--svm-train"),
                                 (cfg.loss, LOSSES, "--loss"), (cfg.lr_schedule, LR_SCHEDULES, "--lr-schedule"),
                                 (cfg.balance, BALANCES, "--balance")):
        if value not in allowed:
            raise UserError(f"unknown {flag} {value!r}: use {' or '.join(allowed)}")


def _counts(ds: ShardDataset) -> dict:
    """Test rows per source x label: videos and frames (ids only, no images decoded)."""
    import pyarrow.parquet as pq

    parts = []
    for f in ds.files:
        t = pq.read_table(f, columns=list(dict.fromkeys([*ds.row_filter.columns, "label", "method", "video_id"])))
        m = ds.row_filter.mask(t)
        parts.append((t if m is None else t.filter(m)).select(["source", "label", "method", "video_id"]).to_pandas())
    df = pd.concat(parts) if parts else pd.DataFrame(columns=["source", "label", "method", "video_id"])
    out = {}
    for (source, label), part in df.groupby(["source", "label"], sort=True):
        out.setdefault(str(source), {})["fake" if int(label) else "real"] = {
            "videos": int(part["video_id"].nunique()), "frames": int(len(part)),
            "methods": sorted(map(str, part["method"].unique()))}
    n = len(df)
    return {"per_source": out, "frames": n, "videos": int(df["video_id"].nunique()),
            "fake_share_frames": float((df["label"] == 1).mean()) if n else None,
            "fake_share_videos": float(df.groupby("video_id")["label"].first().mean()) if n else None}


def train_and_evaluate(work: str | Path, run: str = "default", models: Sequence[str] = ALL_MODELS,
                       cfg: TrainConfig = TrainConfig(), svm_features: str = "hidden16",
                       train_sources: Sequence[str] | None = None,
                       test_sources: Sequence[str] | None = None,
                       svm_max_train: int = MAX_TRAIN, svm_train: str = "originals",
                       out: str | Path | None = None, n_boot: int = N_BOOT, overwrite: bool = False,
                       checkpoints: str | Path | None = None, checkpoint_every: int = CHECKPOINT_EVERY,
                       processes_choice: str | None = None) -> dict:
    """Train, select on val, evaluate on test; write weights, svm.skops, metrics.json, report.md
    and plots to `out`. Returns the metrics dict (with "table"). Without `out`, the run goes to
    WORK/detector/<run>/ as `train_seeds` puts it there: trained beside it, renamed in when whole.
    With `checkpoints` (a folder), each net's training checkpoints there and resumes from it."""
    if out is None:
        return train_seeds(work, run, [cfg.seed], models, cfg, svm_features=svm_features,
                           train_sources=train_sources, test_sources=test_sources, svm_max_train=svm_max_train,
                           svm_train=svm_train, n_boot=n_boot, overwrite=overwrite,
                           checkpoint_every=checkpoint_every)
    work = Path(work)
    _check_choices(cfg, svm_features, svm_train)
    train_files, val_files, test_files = (require_shards(work, s) for s in ("train", "val", "test"))
    tr_src, te_src = _sources(train_sources), _sources(test_sources)
    train_ds = _nonempty(_dataset(train_files, "train", tr_src, augmentations=None), "train")
    val_ds = _nonempty(_dataset(val_files, "val", tr_src), "val")
    test_ds = _nonempty(_dataset(test_files, "test", te_src), "test")
    pert_files = shard_files(work, "test-perturbed")
    pert_ds = _dataset(pert_files, "test-perturbed", te_src, augmentations=None) if pert_files else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    if cfg.processes == "auto" or processes_choice is None:
        cfg, processes_choice = _settle_processes(cfg, train_ds)

    nets = [m for m in MODEL_NAMES if m in models or (m == SVM_BASE and "mesoinception4+svm" in models)]
    shared = {k: v for k, v in asdict(cfg).items() if k not in ("model", "lr_step")}
    metrics: dict = {"config": {**shared, "lr_step_paper": cfg.lr_step, "models": list(models),
                                "trained_nets": nets, "svm_features": svm_features, "svm_train": svm_train,
                                "train_sources": list(tr_src or []), "test_sources": list(te_src or []),
                                "run": run, "threshold_rule": evaluate.THRESHOLD_RULE,
                                "bootstrap": n_boot, "processes_choice": processes_choice,
                                "note": "model name, lr step and schedule as run: models.<name>.config"},
                     "data": {"train_frames": len(train_ds),
                              "train_originals": len(_dataset(train_files, "train", tr_src)),
                              "val_frames": len(val_ds), "test": _counts(test_ds)},
                     "models": {}}
    trained = {}
    for name in nets:
        t0 = time.perf_counter()
        res = train_model(replace(cfg, model=name), train_ds, val_ds, checkpoint_every=checkpoint_every,
                          checkpoint=Path(checkpoints) / f"{name}.pt" if checkpoints else None)
        trained[name] = res
        save_weights(res.model, name, out / f"{name}.pt")
        plan = res.config.get("lr_plan", {})
        metrics["models"][name] = {
            "config": {"model": name, "loss": cfg.loss, "balance": cfg.balance, "epochs": cfg.epochs,
                       "batch_size": cfg.batch_size, "seed": cfg.seed, "lr": cfg.lr, "lr_min": cfg.lr_min,
                       "lr_schedule": cfg.lr_schedule, "lr_step": res.lr_step,
                       "bn_momentum": res.config["bn_momentum"], "device": res.config.get("device"),
                       "class_weights": res.config.get("class_weights"), "processes": res.config.get("processes"),
                       "resumed_from": res.config.get("resumed_from")},
            "lr_plan": plan, "params": count_parameters(res.model), "history": res.history,
            "best_epoch": res.best_epoch, "lr_step": res.lr_step, "bn_momentum": res.config["bn_momentum"],
            "train_seconds": time.perf_counter() - t0, "weights": f"{name}.pt"}

    if "mesoinception4+svm" in models:
        net = trained[SVM_BASE].model
        svm_ds = train_ds if svm_train == "all" else _dataset(train_files, "train", tr_src)
        ftr, Xtr, ytr = svm_training_set(net, svm_ds, cfg, device, svm_features)
        fval, Xval = _scored(net, val_ds, cfg, device, svm_features)
        fit = fit_svm_head(Xtr, ytr, Xval, fval["label"].to_numpy(), max_train=svm_max_train,
                           seed=cfg.seed, features=svm_features)
        save_svm(fit.pipeline_, out / "svm.skops")
        metrics["models"]["mesoinception4+svm"] = {
            "config": {"model": "mesoinception4+svm", "base": SVM_BASE, "features": svm_features,
                       "svm_train": svm_train, "seed": cfg.seed},
            "svm": {"features": svm_features, "train_rows": svm_train, "n_train": fit.n_train_,
                    "n_available": int(len(ytr)),
                    "n_augmented": int((ftr["augmentation"] != "none").sum()) if "augmentation" in ftr else None,
                    "max_train": svm_max_train, "grid": fit.grid_, "best": fit.best_},
            "weights": f"{SVM_BASE}.pt", "head": "svm.skops"}
        trained["mesoinception4+svm"] = fit

    # Thresholds for ACC at a val-chosen operating point, per model, from val only.
    for name in [m for m in ALL_MODELS if m in models]:
        fv = _score_model(name, trained, val_ds, cfg, device, svm_features)
        vv = evaluate.video_frame(fv)
        metrics["models"][name]["val_threshold"] = {
            "frame": evaluate.choose_threshold(fv["label"], fv["score"]),
            "video": evaluate.choose_threshold(vv["label"], vv["score"]), "rule": evaluate.THRESHOLD_RULE}

    # The test split is read here, once per model, after every choice was made on val.
    for name in [m for m in ALL_MODELS if m in models]:
        entry = metrics["models"][name]
        for split_name, ds in (("test", test_ds), ("test-perturbed", pert_ds)):
            if ds is None or len(ds) == 0:
                continue
            frame = _score_model(name, trained, ds, cfg, device, svm_features, f"{name}: scoring {split_name}")
            if split_name == "test":
                entry["test"] = evaluate.evaluate_frame(frame, entry["val_threshold"], n_boot=n_boot,
                                                        seed=cfg.seed)
            else:
                entry["robustness"] = evaluate.grouped_metrics(frame, "augmentation")
    for name in list(metrics["models"]):
        if name not in models:  # mesoinception4 trained only as the SVM's base
            metrics["models"][name]["note"] = "trained as the SVM head's feature extractor"
    metrics["warnings"] = report.warnings_for(metrics)  # printed by the CLI, listed in report.md
    table = report.write_report(metrics, out)
    metrics["table"] = table
    write_json(out / "metrics.json", metrics)
    return metrics


def _score_model(name, trained, ds, cfg, device, svm_features, desc=None):
    if name == "mesoinception4+svm":
        frame, X = _scored(trained[SVM_BASE].model, ds, cfg, device, svm_features, desc)
        decision, prob = svm_scores(trained[name].pipeline_, X)
        frame["decision"], frame["score"] = decision, prob
        return frame
    frame, _ = _scored(trained[name].model, ds, cfg, device, desc=desc)
    return frame


def _settle_processes(cfg: TrainConfig, train_ds: ShardDataset) -> tuple[TrainConfig, str]:
    """`cfg` with its training processes as a count (choose_processes' rule), and why."""
    n, why = choose_processes(cfg.processes, resolve_device(cfg.device).type, len(train_ds) * cfg.epochs,
                              cfg.batch_size)
    return replace(cfg, processes=n), why


def shards_fingerprint(work: str | Path) -> str:
    """What the run was trained and tested on: every shard file's path under WORK/shards, size
    and last 64 KiB (a Parquet footer: row groups, statistics). No absolute paths, no mtimes."""
    shards = Path(work) / "shards"
    h = hashlib.sha256()
    for f in sorted(p for p in shards.rglob("part-*.parquet") if p.is_file()):
        size = f.stat().st_size
        with open(f, "rb") as fh:
            fh.seek(max(0, size - 65536))
            tail = fh.read()
        h.update(f"{f.relative_to(shards).as_posix()}\0{size}\0".encode())
        h.update(hashlib.sha256(tail).digest())
    return h.hexdigest()


def run_request(work: str | Path, seeds: Sequence[int], models: Sequence[str], cfg: TrainConfig,
                **kwargs) -> dict:
    """Everything a run's results depend on: the options (not the loader's worker count) and the
    shards' fingerprint. A run recorded with the same request is up to date."""
    options = {k: v for k, v in asdict(cfg).items() if k not in ("workers", "seed")}
    options.update(seeds=list(seeds), models=list(models), svm_features=kwargs.get("svm_features", "hidden16"),
                   train_sources=list(kwargs.get("train_sources") or []),
                   test_sources=list(kwargs.get("test_sources") or []),
                   svm_max_train=kwargs.get("svm_max_train", MAX_TRAIN),
                   svm_train=kwargs.get("svm_train", "originals"), n_boot=kwargs.get("n_boot", N_BOOT))
    return json.loads(json.dumps({"options": options, "shards": shards_fingerprint(work)}, default=str))


def _recorded(final: Path) -> dict | None:
    try:
        return json.loads((final / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_temps(final: Path) -> list[Path]:
    """Temp dirs of trainings that were killed (their process is gone)."""
    out = []
    for d in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            pid = int(d.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not _pid_alive(pid):
            out.append(d)
    return out


def _resume_request(tmp: Path) -> dict | None:
    try:
        return json.loads((tmp / RESUME_DIR / "request.json").read_text())
    except (OSError, ValueError):
        return None


def _adopt_unfinished(final: Path, request: dict, tmp: Path) -> bool:
    """Take over the temp dir of a killed training of the same request (renamed to `tmp`), so its
    checkpoints resume; the temp dirs of other killed trainings go."""
    adopted = False
    for d in _stale_temps(final):
        if not adopted and _resume_request(d) == request:
            try:
                os.rename(d, tmp)  # atomic: of two re-runs racing for it, one wins
                adopted = True
                log.info("resuming the unfinished run %s from its checkpoints (%s)", final.name, d.name)
                continue
            except OSError:
                pass
        shutil.rmtree(d, ignore_errors=True)
    return adopted


def train_seeds(work: str | Path, run: str, seeds: Sequence[int], models: Sequence[str] = ALL_MODELS,
                cfg: TrainConfig = TrainConfig(), overwrite: bool = False, **kwargs) -> dict:
    """One run per seed, into WORK/detector/<run>/. With one seed the run folder holds the run;
    with several, each seed goes to <run>/seed-<s>/ and <run>/ gets metrics.json and report.md
    with mean ± std (ddof=1) over seeds.

    A run is whole: it is trained in a temp folder beside WORK/detector/<run>/ and renamed into
    place when complete, so the run folder never mixes files of two trainings. A run folder whose
    metrics.json records the same options and shards is up to date: reused, not retrained (the
    returned metrics carry "reused": True). Another existing run is a UserError unless
    `overwrite`, which replaces it only once the new one is complete."""
    seeds = list(seeds)
    _check_choices(cfg, kwargs.get("svm_features", "hidden16"), kwargs.get("svm_train", "originals"))
    work = Path(work)
    final = work / "detector" / run
    train_files = shard_files(work, "train")
    if train_files:  # (without shards, train_and_evaluate says what to run)
        cfg, kwargs["processes_choice"] = _settle_processes(
            cfg, _dataset(train_files, "train", _sources(kwargs.get("train_sources")), augmentations=None))
    request = run_request(work, seeds, models, cfg, **kwargs)
    if final.exists() or final.is_symlink():
        old = _recorded(final)
        if old is not None and old.get("request") == request:
            log.info("run %s is up to date (same options and shards as recorded in %s): not retraining",
                     run, final / "metrics.json")
            return {**old, "reused": True}
        if not overwrite:
            why = ("trained with other options or shards" if old and "request" in old
                   else "its options are not recorded" if old else "not a finished run: no readable metrics.json")
            raise UserError(f"run {run!r} already exists at {final} ({why}): "
                            "pass --overwrite to replace it, or choose another --run")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{run}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if not _adopt_unfinished(final, request, tmp):
        write_json(tmp / RESUME_DIR / "request.json", request)
    try:
        metrics = _train_seeds_into(tmp, work, run, seeds, models, cfg, request, **kwargs)
        shutil.rmtree(tmp / RESUME_DIR)  # the checkpoints go with the unfinished run
        if final.exists() or final.is_symlink():
            trash = final.parent / f".{run}.old-{os.getpid()}"
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return metrics


def _finished_seed(folder: Path) -> dict | None:
    """A seed's metrics from the unfinished run this one resumes (same request), if it completed."""
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None


def _train_seeds_into(out: Path, work: Path, run: str, seeds: list[int], models, cfg: TrainConfig,
                      request: dict, **kwargs) -> dict:
    if len(seeds) == 1:
        metrics = train_and_evaluate(work, run, models, replace(cfg, seed=seeds[0]), out=out,
                                     checkpoints=out / RESUME_DIR / f"seed-{seeds[0]}", **kwargs)
        metrics["request"] = request
        write_json(out / "metrics.json", metrics)
        return metrics
    per_seed = {}
    for s in seeds:
        done = _finished_seed(out / f"seed-{s}")
        if done is not None:
            log.info("seed %d of %s: complete in the resumed run", s, seeds)
            per_seed[s] = done
            continue
        log.info("seed %d of %s", s, seeds)
        per_seed[s] = train_and_evaluate(work, run, models, replace(cfg, seed=s), out=out / f"seed-{s}",
                                         checkpoints=out / RESUME_DIR / f"seed-{s}", **kwargs)
    summary = report.seed_summary(per_seed)
    first = per_seed[seeds[0]]
    metrics = {"config": {**first["config"], "seed": None, "seeds": seeds}, "data": first["data"],
               "seeds": {str(s): f"seed-{s}/metrics.json" for s in seeds}, "summary": summary,
               "warnings": sorted({w for m in per_seed.values() for w in m["warnings"]}),
               "request": request}
    metrics["table"] = report.write_seed_report(metrics, out)
    write_json(out / "metrics.json", metrics)
    return metrics
