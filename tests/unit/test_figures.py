"""Every figure the product writes, rendered from real inputs and measured: no two texts overlap, no
text runs into another panel or off the figure, text is big enough to read, no empty band under a
title; plus what each figure must show (one colour per model, integer epochs, the chosen epoch,
unlabelled rows not coloured as real)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.text import Text
from skimage import data as skdata

from mesodata.detector import plots as dplots
from mesodata.pipeline import plots

RUN = Path(__file__).resolve().parents[1] / "fixtures" / "detector_run_3_epochs.json"  # a real 3-epoch run
MIN_PX = 10  # smallest readable glyph height, in pixels of the saved PNG
MAX_GAP_IN = 0.3  # most empty space allowed between a figure's title and what is under it


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads(RUN.read_text())


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Real footage: face-sized crops of the astronaut portrait at a few offsets."""
    img = skdata.astronaut()
    return [np.ascontiguousarray(img[20 + 12 * k:220 + 12 * k, 150 + 8 * k:350 + 8 * k]) for k in range(8)]


# --- measuring --------------------------------------------------------------------------------
def _axis_texts(fig: Figure) -> dict[int, object]:
    """id of each axis label and tick label -> its axes (tick labels do not record theirs)."""
    out = {}
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for t in (axis.label, axis.offsetText):
                out[id(t)] = ax
            for tick in axis.majorTicks + axis.minorTicks:
                out[id(tick.label1)] = out[id(tick.label2)] = ax
    return out


def _drawn(text: Text, ax) -> bool:
    """Whether the saved PNG shows `text`: matplotlib keeps tick labels outside the view limits and
    the labels of a hidden axis as visible artists it then skips."""
    if not text.get_visible() or not text.get_text().strip():
        return False
    if ax is None:
        return True
    if not ax.get_visible():
        return False
    for axis in (ax.xaxis, ax.yaxis):
        if text is axis.label or text is axis.offsetText:
            return ax.axison and axis.get_visible()
        lo, hi = sorted(axis.get_view_interval())
        for tick in axis.majorTicks + axis.minorTicks:
            if text is tick.label1 or text is tick.label2:
                return ax.axison and axis.get_visible() and \
                    lo - 1e-9 * (hi - lo) <= tick.get_loc() <= hi + 1e-9 * (hi - lo)
    return True


def _shows_something(ax) -> bool:
    return ax.axison or bool(ax.images or ax.lines or ax.collections)


def texts_of(fig: Figure) -> list[tuple[Text, object, object]]:
    """(text, its window extent, its axes or None) of every text the saved PNG shows."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    seen, out, axis_texts = set(), [], _axis_texts(fig)
    for t in fig.findobj(Text):
        owner = t.axes or axis_texts.get(id(t))
        if id(t) not in seen and _drawn(t, owner):
            seen.add(id(t))
            out.append((t, t.get_window_extent(renderer), owner))
    return out


def problems(fig: Figure, min_px: float = MIN_PX) -> list[str]:
    """What a reviewer would trip over, measured on the drawn figure."""
    texts = texts_of(fig)
    assert texts, "the figure shows no text at all"
    out = []
    frame = fig.bbox
    for t, box, owner in texts:
        if box.x0 < frame.x0 - 1 or box.y0 < frame.y0 - 1 or box.x1 > frame.x1 + 1 or box.y1 > frame.y1 + 1:
            out.append(f"cut off by the figure edge: {t.get_text()!r}")
        px = t.get_fontsize() * fig.dpi / 72
        if px < min_px:
            out.append(f"too small to read ({px:.1f} px): {t.get_text()!r}")
        for ax in fig.axes:
            if ax is owner or not _shows_something(ax):
                continue
            if box.overlaps(ax.bbox) and _area(box, ax.bbox) > 1:
                out.append(f"runs into another panel: {t.get_text()!r}")
    for (a, ba, _), (b, bb, _) in itertools.combinations(texts, 2):
        if _area(ba, bb) > 1:
            out.append(f"overlap: {a.get_text()!r} and {b.get_text()!r}")
    title = fig._suptitle if fig._suptitle is not None and _drawn(fig._suptitle, None) else None
    if title is not None:
        below = [b.y1 for t, b, _ in texts if t is not title and b.y1 <= title.get_window_extent().y0 + 1]
        below += [ax.bbox.y1 for ax in fig.axes if _shows_something(ax)]
        gap = (title.get_window_extent().y0 - max(below)) / fig.dpi
        if gap > MAX_GAP_IN:
            out.append(f"an empty band of {gap:.2f} in under the title {title.get_text()!r}")
    return out


def _area(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


# --- detector run figures -----------------------------------------------------------------------
def test_roc_is_readable(metrics):
    fig = dplots.roc_figure(metrics)
    assert problems(fig) == []
    labels = [t.get_text() for t, *_ in texts_of(fig)]
    assert any(s.startswith("Meso-4 (AUC") for s in labels)


def test_confusion_titles_and_labels_do_not_overlap(metrics):
    fig = dplots.confusion_figure(metrics)
    assert problems(fig) == []
    shown = [t.get_text() for t, *_ in texts_of(fig)]
    for name in metrics["models"]:
        assert dplots.DISPLAY_NAMES[name] in shown
    cm = metrics["models"]["meso4"]["test"]["frame"]["confusion"]
    assert f"{cm[0][0]}\n{100 * cm[0][0] / sum(cm[0]):.0f} %" in shown


def test_curves_one_colour_per_model_integer_epochs_and_the_chosen_epoch(metrics):
    fig = dplots.curves_figure(metrics)
    assert problems(fig) == []
    trained = {n: m for n, m in metrics["models"].items() if m.get("history")}
    assert len(trained) == 2
    loss_ax, acc_ax = fig.axes
    colours = {}
    for name, m in trained.items():
        epochs = [h["epoch"] for h in m["history"]]
        for ax, key in ((loss_ax, "loss"), (acc_ax, "acc")):
            solid = [ln for ln in ax.lines if ln.get_linestyle() == "-" and list(ln.get_xdata()) == epochs
                     and np.allclose(ln.get_ydata(), [h[f"train_{key}"] for h in m["history"]])]
            dashed = [ln for ln in ax.lines if ln.get_linestyle() == "--" and list(ln.get_xdata()) == epochs
                      and np.allclose(ln.get_ydata(), [h[f"val_{key}"] for h in m["history"]])]
            assert len(solid) == 1 and len(dashed) == 1, (name, key)
            assert to_rgb(solid[0].get_color()) == to_rgb(dashed[0].get_color())  # one colour per model
            colours.setdefault(name, to_rgb(solid[0].get_color()))
            assert to_rgb(solid[0].get_color()) == colours[name]  # and the same in both panels
            best = m["best_epoch"]
            star = [ln for ln in ax.lines if ln.get_marker() == "*" and list(ln.get_xdata()) == [best]]
            assert len(star) == 1 and to_rgb(star[0].get_color()) == colours[name]
            assert star[0].get_ydata()[0] == pytest.approx(m["history"][best - 1][f"val_{key}"])
    assert len(set(colours.values())) == len(colours)
    # the two models of this run chose different epochs, so each star is at its own model's epoch
    assert len({m["best_epoch"] for m in trained.values()}) == 2
    for ax in (loss_ax, acc_ax):
        shown = [t for t, _, owner in texts_of(fig) if owner is ax and t in ax.xaxis.get_ticklabels()]
        assert shown and all(float(t.get_text().replace("−", "-")).is_integer() for t in shown)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert dplots.CHOSEN_LABEL in legend and "train" in legend and "val" in legend


def test_report_writes_the_three_figures(metrics, tmp_path):
    from mesodata.detector import report

    report._plots(metrics, tmp_path)
    for name in ("roc.png", "confusion.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- curating sheets ------------------------------------------------------------------------------
def test_face_sheet_unlabelled_row_is_grey_not_real(crops):
    by_label = {0: [(c, f"id0_000{k} #{3 * k}") for k, c in enumerate(crops)],
                1: [(c, f"728115_643049_A_001 #{k}") for k, c in enumerate(crops)],
                None: [(c, f"gunlisted #{k}") for k, c in enumerate(crops)]}
    fig = plots.face_sheet("dfdc: random face crops (256x256), one row per label", by_label)
    assert problems(fig) == []
    colour = {t.get_text(): to_rgb(t.get_color()) for t, *_ in texts_of(fig)}
    real, fake, none = colour["real"], colour["fake"], colour["no label"]
    assert none != real and none != fake
    assert max(none) - min(none) < 0.01  # grey: no hue at all
    assert real[1] > real[0] and real[1] > real[2]  # real reads green
    assert fake[0] > fake[1] and fake[0] > fake[2]  # fake reads red
    assert "728115_643049_A_001 #0" in colour  # a whole video id with its frame index


def test_duplicate_clusters_have_no_empty_top_margin_and_readable_text(crops):
    clusters = [{"cluster": 34 + k, "crops": 40 - k, "videos": 2 + k,
                 "examples": [{"video_id": f"ff++/original_sequences/youtube/c23/videos/{k:03d}_{j:03d}",
                               "frame_index": 3 * j} for j in range(10)]} for k in range(6)]
    images = {(e["video_id"], e["frame_index"]): crops[j % len(crops)]
              for b in clusters for j, e in enumerate(b["examples"][:7])}  # the 8th crop is missing
    fig = plots.duplicate_clusters(clusters, images, radius=6, per_cluster=8)
    assert problems(fig) == []
    shown = [t.get_text() for t, *_ in texts_of(fig)]
    assert "cluster 34\n40 crops\n2 videos" in shown
    assert shown.count("crop not found") == 6


def test_dropped_sheet_shows_whole_reasons(crops):
    reasons = ["the stream ended after 18 frames; 40 were expected",
               "dlib found no face in 1 Viola-Jones candidate(s)", "", "decode error: invalid data found "
               "when processing input (at byte 1048576 of 1048577, after 3 retries)"]
    rows = [{"video_id": f"celebdf/Celeb-synthesis/id{k}_id{k + 1}_0000", "frame_index": 3 * k if k != 2 else None,
             "source": "celebdf", "status": ["truncated", "rejected", "no_face", "decode_error"][k % 4],
             "reason": reasons[k % 4]} for k in range(8)]
    images = [None if r["status"] in ("truncated", "decode_error") else crops[k] for k, r in enumerate(rows)]
    fig = plots.dropped_sheet(rows, images, total=112, cols=4)
    assert problems(fig) == []
    shown = "\n".join(t.get_text() for t, *_ in texts_of(fig))
    assert "the stream ended after 18\nframes; 40 were expected" in shown or \
        "the stream ended after 18 frames;\n40 were expected" in shown
    assert "id2_id3_0000 #?" in shown  # no frame could be planned
    assert shown.count("not decodable") == 4


def test_checks_catch_what_they_guard():
    """The measurements themselves: an overlap, a cut-off label, tiny text and an empty band under
    the title are each reported."""
    fig = Figure(figsize=(4, 6), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    ax.text(0.5, 0.5, "one", transform=ax.transAxes)
    ax.text(0.5, 0.5, "two", transform=ax.transAxes)
    ax.text(1.3, 0.5, "off the edge", transform=ax.transAxes)
    ax.text(0.1, 0.9, "tiny", fontsize=5, transform=ax.transAxes)
    fig.subplots_adjust(top=0.6)
    fig.suptitle("title")
    found = "\n".join(problems(fig))
    assert "overlap: 'one' and 'two'" in found
    assert "cut off by the figure edge: 'off the edge'" in found
    assert "too small to read" in found and "'tiny'" in found
    assert "empty band" in found
