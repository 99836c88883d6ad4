"""A detector run's figures from its metrics.json: ROC, confusion matrices, training curves.

Pure functions from the metrics dict to a matplotlib Figure (no pyplot state, no files), laid out by
constrained layout; detector/report.py saves them with `mesodata.pipeline.plots.png_bytes`.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

__all__ = ["roc_figure", "confusion_figure", "curves_figure", "DISPLAY_NAMES", "CHOSEN_LABEL"]

DPI = 110
DISPLAY_NAMES = {"meso4": "Meso-4", "mesoinception4": "MesoInception-4",
                 "mesoinception4+svm": "MesoInception-4 + SVM"}
CHOSEN_LABEL = "chosen epoch (lowest val loss)"


def _name(key: str) -> str:
    return DISPLAY_NAMES.get(key, key)


def _colours(models: dict) -> dict[str, str]:
    """One colour per model, the same in every figure of the run."""
    return {name: f"C{k}" for k, name in enumerate(models)}


def roc_figure(metrics: dict) -> Figure:
    models = metrics["models"]
    colour = _colours(models)
    fig = Figure(figsize=(5, 5), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    for name, m in models.items():
        frame = (m.get("test") or {}).get("frame", {})
        if frame.get("roc"):
            ax.plot(frame["roc"]["fpr"], frame["roc"]["tpr"], color=colour[name],
                    label=f"{_name(name)} (AUC {100 * frame['auc']:.1f} %)")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate (fake caught)",
           title="Test ROC, frame level", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def confusion_figure(metrics: dict) -> Figure:
    """Per model, the test frames at threshold 0.5: counts and the share of each true class."""
    models = metrics["models"]
    names = [n for n in models if (models[n].get("test") or {}).get("frame", {}).get("confusion")]
    n = max(len(names), 1)
    fig = Figure(figsize=(2.9 * n + 0.4, 3.3), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for k, (ax, name) in enumerate(zip(axes, names)):
        cm = models[name]["test"]["frame"]["confusion"]
        top = max(max(r) for r in cm) or 1
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=top)
        for i in range(2):
            total = sum(cm[i]) or 1
            for j in range(2):
                ax.text(j, i, f"{cm[i][j]}\n{100 * cm[i][j] / total:.0f} %", ha="center", va="center",
                        fontsize=9, color="white" if cm[i][j] > top / 2 else "black")
        ax.set_xticks([0, 1], ["real", "fake"])
        ax.set_yticks([0, 1], ["real", "fake"] if k == 0 else [])
        ax.set_xlabel("predicted")
        if k == 0:
            ax.set_ylabel("true")
        ax.set_title(_name(name), fontsize=10)
    if not names:
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, "no model was tested", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle("Test frames at threshold 0.5 (count, share of the true class)", fontsize=10)
    return fig


def curves_figure(metrics: dict) -> Figure:
    """Loss and accuracy per epoch: one colour per model, train solid, val dashed, and a star on
    the epoch whose weights were kept."""
    models = metrics["models"]
    colour = _colours(models)
    trained = {n: m for n, m in models.items() if m.get("history")}
    fig = Figure(figsize=(10, 4.2), dpi=DPI, layout="constrained")
    a1, a2 = fig.subplots(1, 2)
    last = 1
    for name, m in trained.items():
        hist = m["history"]
        ep = [h["epoch"] for h in hist]
        last = max(last, max(ep))
        for ax, key in ((a1, "loss"), (a2, "acc")):
            ax.plot(ep, [h[f"train_{key}"] for h in hist], "-", marker="o", ms=3, color=colour[name])
            ax.plot(ep, [h[f"val_{key}"] for h in hist], "--", marker="o", ms=3, color=colour[name])
            best = m.get("best_epoch")
            at = next((h for h in hist if h["epoch"] == best), None)
            if at is not None:
                ax.plot([best], [at[f"val_{key}"]], "*", ms=13, color=colour[name], mec="black", mew=0.8,
                        zorder=5)
    loss = (metrics.get("config") or {}).get("loss", "bce")
    a1.set(xlabel="epoch", ylabel=f"{loss} loss", title="Loss")
    a2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.6, last + 0.4)
        ax.grid(alpha=0.3)
    if not trained:
        a1.text(0.5, 0.5, "no training history", ha="center", va="center", transform=a1.transAxes)
    handles = [Line2D([], [], color=colour[n], lw=2, label=_name(n)) for n in trained]
    handles += [Line2D([], [], color="black", ls="-", label="train"),
                Line2D([], [], color="black", ls="--", label="val"),
                Line2D([], [], color="0.6", ls="", marker="*", ms=12, mec="black", label=CHOSEN_LABEL)]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    return fig
