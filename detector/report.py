"""Turn a run's metrics into what a person reads: a comparison table, report.md and plots
(roc.png, confusion.png, curves.png) under WORK/detector/<run>/."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from mesodata.pipeline.atomic import atomic_path, write_bytes  # noqa: E402

__all__ = ["comparison_rows", "comparison_table", "write_report", "DISPLAY_NAMES"]

DISPLAY_NAMES = {"meso4": "Meso-4", "mesoinception4": "MesoInception-4",
                 "mesoinception4+svm": "MesoInception-4 + SVM"}


def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def comparison_rows(metrics: dict) -> list[dict]:
    """One row per model: frame and video ACC / AUC / EER on the test split."""
    rows = []
    for name, m in metrics["models"].items():
        t = m.get("test")
        if not t:
            continue
        rows.append({"model": DISPLAY_NAMES.get(name, name), "frames": t["frame"]["n"],
                     "frame_acc": t["frame"]["acc"], "frame_auc": t["frame"]["auc"],
                     "frame_eer": t["frame"]["eer"], "frame_ap": t["frame"]["ap"],
                     "videos": t["video"]["n_videos"], "video_acc": t["video"]["acc"],
                     "video_auc": t["video"]["auc"]})
    return rows


def comparison_table(rows: list[dict]) -> str:
    """A Markdown table (also readable in a terminal), percentages like the paper's Tables 6-7."""
    head = "| model | frames | ACC % | AUC % | EER % | AP % | videos | video ACC % | video AUC % |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['frames']} | {_fmt(r['frame_acc'])} | {_fmt(r['frame_auc'])} | "
                     f"{_fmt(r['frame_eer'])} | {_fmt(r['frame_ap'])} | {r['videos']} | "
                     f"{_fmt(r['video_acc'])} | {_fmt(r['video_auc'])} |")
    return "\n".join(lines)


def _breakdown_table(per: dict[str, dict], key: str) -> str:
    lines = [f"| {key} | n | ACC % | AUC % | EER % |", "|---|---|---|---|---|"]
    for name, m in per.items():
        lines.append(f"| {name} | {m['n']} | {_fmt(m['acc'])} | {_fmt(m['auc'])} | {_fmt(m['eer'])} |")
    return "\n".join(lines)


def _savefig(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _plots(metrics: dict, out: Path) -> None:
    models = metrics["models"]
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, m in models.items():
        roc = (m.get("test") or {}).get("frame", {}).get("roc")
        if roc:
            ax.plot(roc["fpr"], roc["tpr"], label=f"{DISPLAY_NAMES.get(name, name)} "
                                                  f"(AUC {100 * m['test']['frame']['auc']:.1f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate (fake caught)",
           title="Test ROC, frame level")
    ax.legend(loc="lower right", fontsize=8)
    _savefig(fig, out / "roc.png")

    names = [n for n in models if models[n].get("test")]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        cm = models[name]["test"]["frame"]["confusion"]
        ax.imshow(cm, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(cm[i][j]), ha="center", va="center")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["real", "fake"], yticklabels=["real", "fake"],
               xlabel="predicted", ylabel="true", title=DISPLAY_NAMES.get(name, name))
    _savefig(fig, out / "confusion.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, m in models.items():
        hist = m.get("history") or []
        if not hist:
            continue
        ep = [h["epoch"] for h in hist]
        label = DISPLAY_NAMES.get(name, name)
        a1.plot(ep, [h["train_loss"] for h in hist], "-o", ms=3, label=f"{label} train")
        a1.plot(ep, [h["val_loss"] for h in hist], "--o", ms=3, label=f"{label} val")
        a2.plot(ep, [h["train_acc"] for h in hist], "-o", ms=3, label=f"{label} train")
        a2.plot(ep, [h["val_acc"] for h in hist], "--o", ms=3, label=f"{label} val")
    a1.set(xlabel="epoch", ylabel="BCE loss", title="Loss")
    a2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    _savefig(fig, out / "curves.png")


def write_report(metrics: dict, out: str | Path) -> str:
    """Write report.md and the three plots into `out`; return the comparison table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _plots(metrics, out)
    table = comparison_table(comparison_rows(metrics))
    cfg = metrics.get("config", {})
    md = [f"# Detector run `{out.name}`", "",
          f"Train sources: {cfg.get('train_sources') or 'all'}; test sources: {cfg.get('test_sources') or 'all'}; "
          f"seed {cfg.get('seed')}; label 1 = fake.", "",
          "## Test split", "", table, "",
          "Video level: mean frame score per `video_id`, threshold 0.5. The SVM's score is the "
          "sigmoid of its decision value (0.5 = its boundary).", ""]
    for name, m in metrics["models"].items():
        label = DISPLAY_NAMES.get(name, name)
        md += [f"## {label}", ""]
        if "params" in m:
            md += [f"{m['params']:,} trainable parameters; best epoch {m.get('best_epoch')} (by val loss); "
                   f"lr /10 every {m.get('lr_step')} iterations.", ""]
        if "svm" in m:
            s = m["svm"]
            md += [f"Features {s['features']}; {s['n_train']} training rows; chosen C={s['best']['C']}, "
                   f"gamma={s['best']['gamma']} (val AUC {_fmt(s['best']['val_auc'])}).", ""]
        t = m.get("test")
        if t:
            pc = t["frame"]["per_class"]
            md += ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            md += [f"| {c} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {_fmt(v['f1'])} | {v['support']} |"
                   for c, v in pc.items()]
            md += ["", "Per source:", "", _breakdown_table(t.get("per_source", {}), "source"), "",
                   "Per method (each method's fakes against all real frames):", "",
                   _breakdown_table(t.get("per_method", {}), "method"), ""]
        rob = m.get("robustness")
        if rob:
            md += ["Robustness on test-perturbed (per augmentation):", "",
                   _breakdown_table(rob, "augmentation"), ""]
    md += ["![ROC](roc.png)", "", "![confusion](confusion.png)", "", "![curves](curves.png)", ""]
    write_bytes(out / "report.md", "\n".join(md).encode())
    return table
