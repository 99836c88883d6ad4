"""Turn a run's metrics into what a person reads: a comparison table, report.md and plots
(roc.png, confusion.png, curves.png) under WORK/detector/<run>/."""

from __future__ import annotations

from pathlib import Path

from mesodata.pipeline.atomic import write_bytes
from mesodata.pipeline.plots import png_bytes

from . import plots
from .plots import DISPLAY_NAMES

__all__ = ["comparison_rows", "comparison_table", "write_report", "DISPLAY_NAMES", "warnings_for",
           "seed_summary", "write_seed_report", "MIN_VIDEOS"]

MIN_VIDEOS = 10  # fewer test videos than this in a source or method: a warning


def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def _ci(ci: list | None) -> str:
    return f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""


def comparison_rows(metrics: dict) -> list[dict]:
    """One row per model: frame and video ACC / balanced ACC (at 0.5 and at the val-chosen
    threshold) / AUC (with its video-bootstrap interval) / EER on the test split."""
    rows = []
    for name, m in metrics["models"].items():
        t = m.get("test")
        if not t:
            continue
        f, v = t["frame"], t["video"]
        ft, vt = f.get("at_val_threshold") or {}, v.get("at_val_threshold") or {}
        boot = t.get("bootstrap") or {}
        rows.append({"model": DISPLAY_NAMES.get(name, name), "frames": f["n"],
                     "frame_acc": f["acc"], "frame_bacc": f.get("bacc"), "frame_acc_thr": ft.get("acc"),
                     "frame_bacc_thr": ft.get("bacc"), "frame_auc": f["auc"], "frame_auc_ci": boot.get("frame"),
                     "frame_eer": f["eer"], "frame_ap": f["ap"],
                     "videos": v["n_videos"], "video_acc": v["acc"], "video_bacc": v.get("bacc"),
                     "video_bacc_thr": vt.get("bacc"), "video_auc": v["auc"], "video_auc_ci": boot.get("video")})
    return rows


def comparison_table(rows: list[dict]) -> str:
    """A Markdown table (also readable in a terminal), percentages like the paper's Tables 6-7."""
    head = ("| model | frames | ACC % | bACC % | ACC@thr % | bACC@thr % | AUC % [95 % CI] | EER % | AP % "
            "| videos | video ACC % | video bACC % | video bACC@thr % | video AUC % [95 % CI] |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(f"| {r['model']} | {r['frames']} | {_fmt(r['frame_acc'])} | {_fmt(r.get('frame_bacc'))} | "
                     f"{_fmt(r.get('frame_acc_thr'))} | {_fmt(r.get('frame_bacc_thr'))} | "
                     f"{_fmt(r['frame_auc'])}{_ci(r.get('frame_auc_ci'))} | "
                     f"{_fmt(r['frame_eer'])} | {_fmt(r['frame_ap'])} | {r['videos']} | "
                     f"{_fmt(r['video_acc'])} | {_fmt(r.get('video_bacc'))} | {_fmt(r.get('video_bacc_thr'))} | "
                     f"{_fmt(r['video_auc'])}{_ci(r.get('video_auc_ci'))} |")
    return "\n".join(lines)


def warnings_for(metrics: dict) -> list[str]:
    """What a reviewer would flag before trusting the numbers: AUC below chance, accuracy equal to
    the majority share, a model predicting one class only, a test source or method with one class
    or fewer than MIN_VIDEOS videos."""
    out = []
    counts = (metrics.get("data") or {}).get("test", {}).get("per_source", {})
    for source, by in counts.items():
        if len(by) < 2:
            only = next(iter(by))
            out.append(f"test source {source} has {only} videos only: its AUC is undefined")
        n = sum(c["videos"] for c in by.values())
        if n < MIN_VIDEOS:
            out.append(f"test source {source} has {n} videos (< {MIN_VIDEOS}): its numbers are anecdotal")
    for name, m in metrics["models"].items():
        t = m.get("test")
        if not t:
            continue
        label = DISPLAY_NAMES.get(name, name)
        for level in ("frame", "video"):
            r = t[level]
            if r.get("auc") is not None and r["auc"] < 0.5:
                out.append(f"{label}: test {level} AUC {_fmt(r['auc'])} % is below chance (50 %)")
            if r.get("majority_share") is not None and abs(r["acc"] - r["majority_share"]) < 1e-9:
                out.append(f"{label}: test {level} accuracy {_fmt(r['acc'])} % equals the majority "
                           f"class share")
            share = r.get("pred_fake_share")
            if share in (0.0, 1.0):
                out.append(f"{label}: predicts {'fake' if share else 'real'} for every test {level} "
                           f"at threshold 0.5")
            thr = r.get("at_val_threshold") or {}
            if thr.get("pred_fake_share") in (0.0, 1.0):
                out.append(f"{label}: predicts {'fake' if thr['pred_fake_share'] else 'real'} for every "
                           f"test {level} at the val-chosen threshold {thr['threshold']:.3f}")
        for key, pm in (t.get("per_method") or {}).items():
            if pm.get("auc") is None:
                out.append(f"{label}: method {key} has no real test frames in its source: no AUC")
            elif pm["auc"] < 0.5:
                out.append(f"{label}: method {key} test frame AUC {_fmt(pm['auc'])} % is below chance")
    first = next((m.get("test") for m in metrics["models"].values() if m.get("test")), None)
    for key, pm in ((first or {}).get("per_method") or {}).items():
        if (pm.get("n_videos") or 0) < MIN_VIDEOS:
            out.append(f"test method {key} (with its source's reals) has {pm.get('n_videos')} videos "
                       f"(< {MIN_VIDEOS}): its numbers are anecdotal")
    return out


def _counts_table(test: dict) -> list[str]:
    lines = ["| source | real videos | real frames | fake videos | fake frames | fake methods |",
             "|---|---|---|---|---|---|"]
    for source, by in test.get("per_source", {}).items():
        r, f = by.get("real", {}), by.get("fake", {})
        lines.append(f"| {source} | {r.get('videos', 0)} | {r.get('frames', 0)} | {f.get('videos', 0)} | "
                     f"{f.get('frames', 0)} | {', '.join(f.get('methods', [])) or '-'} |")
    return lines


def _header(metrics: dict) -> list[str]:
    """What the numbers rest on: config, test counts, prevalence, warnings."""
    cfg = metrics.get("config", {})
    data = metrics.get("data", {})
    test = data.get("test", {})
    seeds = cfg.get("seeds") or [cfg.get("seed")]
    md = ["## What these numbers rest on", "",
          f"- Loss **{cfg.get('loss')}**, lr schedule **{cfg.get('lr_schedule')}** (lr {cfg.get('lr'):g} "
          f"/10 down to {cfg.get('lr_min'):g}), class balance **{cfg.get('balance')}**, "
          f"epochs {cfg.get('epochs')}, batch {cfg.get('batch_size')}, seed(s) {', '.join(map(str, seeds))}.",
          f"- SVM head: features **{cfg.get('svm_features')}**, fitted on the train **{cfg.get('svm_train')}**"
          f" rows; C and gamma chosen by val AUC.",
          f"- Train sources: {', '.join(cfg.get('train_sources') or []) or 'all'}; test sources: "
          f"{', '.join(cfg.get('test_sources') or []) or 'all'}. Label 1 = fake.",
          f"- Rows: {data.get('train_frames')} train images ({data.get('train_originals')} originals and "
          f"{(data.get('train_frames') or 0) - (data.get('train_originals') or 0)} augmented copies), "
          f"{data.get('val_frames')} val frames, {test.get('frames')} test frames in {test.get('videos')} videos.",
          ]
    if cfg.get("processes_choice"):
        md.append(f"- Training processes: {cfg.get('processes')} ({cfg['processes_choice']}).")
    for name, m in metrics.get("models", {}).items():
        resumed = (m.get("config") or {}).get("resumed_from")
        if resumed:
            md.append(f"- {DISPLAY_NAMES.get(name, name)}: resumed after an interruption from its checkpoint "
                      f"({resumed['epoch']} whole epochs and {resumed['iteration']} iterations done).")
        plan = m.get("lr_plan") or {}
        if plan:
            floor = (f"floor reached at iteration {plan['floor_iteration']} (epoch {plan['floor_epoch']:.2f}; "
                     f"{100 * plan['share_at_floor']:.0f} % of the run at the floor)"
                     if plan.get("floor_iteration") else "floor not reached")
            md.append(f"- {DISPLAY_NAMES.get(name, name)}: lr /10 every {plan['lr_step']} of "
                      f"{plan['total_iterations']} iterations, {floor}; best epoch {m.get('best_epoch')} by val loss.")
    if test.get("fake_share_frames") is not None:
        md.append(f"- Prevalence in test: {100 * test['fake_share_frames']:.1f} % of frames and "
                  f"{100 * test['fake_share_videos']:.1f} % of videos are fake: a model that calls everything "
                  f"fake scores {100 * max(test['fake_share_frames'], 1 - test['fake_share_frames']):.1f} % "
                  f"frame accuracy; balanced accuracy (bACC, the mean of the two class recalls) does not reward it.")
    md.append(f"- Thresholds: ACC/bACC at 0.5, and @thr at {cfg.get('threshold_rule', 'a val-chosen threshold')}.")
    if cfg.get("bootstrap"):
        md.append(f"- AUC intervals: 95 % percentile bootstrap over {cfg['bootstrap']} resamples of the test "
                  "videos (within each class), frames following their video.")
    md += ["", "Test rows per source and label:", "", *_counts_table(test), ""]
    warns = metrics.get("warnings") or []
    md += ["### Warnings", ""]
    md += [f"- **{w}**" for w in warns] if warns else ["- none"]
    md.append("")
    return md


def _breakdown_table(per: dict[str, dict], key: str) -> str:
    lines = [f"| {key} | frames | videos | ACC % | bACC % | AUC % | video AUC % | EER % |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in per.items():
        lines.append(f"| {name} | {m['n']} | {m.get('n_videos', '')} | {_fmt(m['acc'])} | {_fmt(m.get('bacc'))} | "
                     f"{_fmt(m['auc'])} | {_fmt(m.get('video_auc'))} | {_fmt(m['eer'])} |")
    return "\n".join(lines)


def _plots(metrics: dict, out: Path) -> None:
    for name, figure in (("roc.png", plots.roc_figure), ("confusion.png", plots.confusion_figure),
                         ("curves.png", plots.curves_figure)):
        write_bytes(out / name, png_bytes(figure(metrics)))


def _run_name(metrics: dict, out: Path) -> str:
    """The run's name as the user gave it: `out` is a temporary folder until the run is complete."""
    run = metrics.get("config", {}).get("run") or out.name
    return f"{run}/{out.name}" if out.name.startswith("seed-") else run


def write_report(metrics: dict, out: str | Path) -> str:
    """Write report.md and the three plots into `out`; return the comparison table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _plots(metrics, out)
    table = comparison_table(comparison_rows(metrics))
    md = [f"# Detector run `{_run_name(metrics, out)}`", "", *_header(metrics),
          "## Test split", "", table, "",
          "Video level: mean frame score per `video_id`. The SVM's score is the sigmoid of its decision "
          "value (0.5 = its boundary). @thr: at the threshold chosen on val (per model and level).", ""]
    for name, m in metrics["models"].items():
        label = DISPLAY_NAMES.get(name, name)
        md += [f"## {label}", ""]
        if "params" in m:
            md += [f"{m['params']:,} trainable parameters; best epoch {m.get('best_epoch')} (by val loss); "
                   f"lr /10 every {m.get('lr_step')} iterations.", ""]
        if "svm" in m:
            s = m["svm"]
            md += [f"Features {s['features']}; {s['n_train']} training rows (train {s.get('train_rows')}); "
                   f"chosen C={s['best']['C']}, gamma={s['best']['gamma']} (val AUC {_fmt(s['best']['val_auc'])}).", ""]
        if m.get("val_threshold"):
            vt = m["val_threshold"]
            md += [f"Val-chosen thresholds: frame {vt['frame']:.3f}, video {vt['video']:.3f}.", ""]
        t = m.get("test")
        if t:
            pc = t["frame"]["per_class"]
            md += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            md += [f"| {c} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {_fmt(v['f1'])} | {v['support']} |"
                   for c, v in pc.items()]
            md += ["", "Per source:", "", _breakdown_table(t.get("per_source", {}), "source"), "",
                   "Per method, against the same source's reals (FF++ methods vs FF++ originals, "
                   "Celeb-synthesis vs Celeb-real + YouTube-real, DFDC methods vs DFDC originals):", "",
                   _breakdown_table(t.get("per_method", {}), "source/method"), "",
                   "Per method against every real test frame (cross-source: other datasets' reals "
                   "included):", "",
                   _breakdown_table(t.get("per_method_vs_all_reals", {}), "method"), ""]
        rob = m.get("robustness")
        if rob:
            md += ["Robustness on test-perturbed (per augmentation):", "",
                   _breakdown_table(rob, "augmentation"), ""]
    md += ["![ROC](roc.png)", "", "![confusion](confusion.png)", "", "![curves](curves.png)", ""]
    write_bytes(out / "report.md", "\n".join(md).encode())
    return table


SEED_METRICS = (("frame_auc", ("frame", "auc")), ("video_auc", ("video", "auc")),
                ("frame_acc", ("frame", "acc")), ("frame_bacc", ("frame", "bacc")),
                ("frame_bacc_thr", ("frame", "at_val_threshold", "bacc")),
                ("video_acc", ("video", "acc")), ("video_bacc", ("video", "bacc")),
                ("frame_eer", ("frame", "eer")))


def _get(d: dict | None, path: tuple):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def seed_summary(per_seed: dict[int, dict]) -> dict:
    """Per model and metric: the values over seeds, their mean and sample standard deviation
    (ddof=1; 0 with one seed). Undefined values (one-class test) are left out."""
    import numpy as np

    out: dict = {}
    names = list(next(iter(per_seed.values()))["models"])
    for name in names:
        row = {}
        for key, path in SEED_METRICS:
            vals = [_get(m["models"].get(name, {}).get("test"), path) for m in per_seed.values()]
            vals = [float(v) for v in vals if v is not None]
            row[key] = {"values": vals, "mean": float(np.mean(vals)) if vals else None,
                        "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else (0.0 if vals else None)}
        out[name] = row
    return out


def _pm(v: dict) -> str:
    if not v or v.get("mean") is None:
        return "n/a"
    return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"


def write_seed_report(metrics: dict, out: str | Path) -> str:
    """report.md for a several-seed run: the header, then mean ± std per model over seeds."""
    out = Path(out)
    seeds = metrics["config"]["seeds"]
    lines = ["| model | frame AUC % | video AUC % | ACC % | bACC % | bACC@thr % | video ACC % | video bACC % |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in metrics["summary"].items():
        if row["frame_auc"]["mean"] is None and row["frame_acc"]["mean"] is None:
            continue
        lines.append(f"| {DISPLAY_NAMES.get(name, name)} | {_pm(row['frame_auc'])} | {_pm(row['video_auc'])} | "
                     f"{_pm(row['frame_acc'])} | {_pm(row['frame_bacc'])} | {_pm(row['frame_bacc_thr'])} | "
                     f"{_pm(row['video_acc'])} | {_pm(row['video_bacc'])} |")
    table = "\n".join(lines)
    hdr_metrics = {**metrics, "models": {}}
    md = [f"# Detector run `{_run_name(metrics, out)}`: {len(seeds)} seeds", "", *_header(hdr_metrics),
          f"## Test split: mean ± std over seeds {', '.join(map(str, seeds))}", "", table, "",
          "Standard deviation across seeds (ddof = 1). Each seed's full report: "
          + ", ".join(f"[seed {s}](seed-{s}/report.md)" for s in seeds) + ".", ""]
    write_bytes(out / "report.md", "\n".join(md).encode())
    return table
