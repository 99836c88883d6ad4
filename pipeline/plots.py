"""The curating stages' pictures as pure functions: arrays and captions in, a matplotlib Figure out.

The faces stage's contact sheets, dedupe's largest clusters and `mesodata frames --contact-sheet`
are all one layout: rows of image tiles with a caption above each and an optional header on the
left. Figures are laid out by matplotlib's constrained layout and saved as drawn (no tight bbox), so
what a test measures on the Figure is what the PNG shows.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

__all__ = ["Tile", "Row", "tile_grid", "png_bytes", "LABEL_NAMES", "LABEL_COLOURS", "fit_line",
           "face_sheet", "duplicate_clusters", "dropped_sheet", "FONT_PT", "SMALL_PT"]

FONT_PT = 9  # headers, titles
SMALL_PT = 7.5  # captions: about 11 px tall at the 110 dpi the sheets are saved at
DPI = 110

LABEL_NAMES = {0: "real", 1: "fake", None: "no label"}
# real green, fake red; rows without a label (e.g. DFDC full parts' test videos) grey, never "real"'s green
LABEL_COLOURS = {0: "#1b7a2e", 1: "#c0262d", None: "#6e6e6e"}


@dataclass
class Tile:
    image: np.ndarray | None  # RGB uint8; None draws a grey tile saying `missing`
    caption: str = ""  # lines separated by "\n"; each is shortened to fit the tile's width
    missing: str = "not decodable"


@dataclass
class Row:
    tiles: list[Tile]
    header: str = ""  # drawn left of the row (a label name, a cluster's size)
    colour: str = "black"
    bold: bool = False


def fit_line(text: str, width_chars: int) -> str:
    """`text` shortened in the middle to at most `width_chars` characters (both ends say the most
    about a video id: its folder and its frame)."""
    if len(text) <= width_chars:
        return text
    keep = width_chars - 1
    return text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]


def _caption(text: str, width_chars: int, max_lines: int) -> str:
    """`text` fitted to a tile: a line that fits is kept; a longer one wraps while there are spare
    lines (cut at its end), else is shortened in the middle (a video id keeps its start and its
    frame index)."""
    lines = text.split("\n")[:max_lines]
    spare = max_lines - len(lines)
    out: list[str] = []
    for line in lines:
        if len(line) <= width_chars:
            out.append(line)
            continue
        pieces = textwrap.wrap(line, width_chars, break_long_words=True)
        if spare and len(pieces) > 1:
            use = min(len(pieces), spare + 1)
            spare -= use - 1
            last = " ".join(pieces[use - 1:])  # prose: cut at the end, where it says least
            out += pieces[:use - 1] + [last if len(last) <= width_chars else last[:width_chars - 1] + "…"]
        else:
            out.append(fit_line(line, width_chars))
    return "\n".join(out)


def _chars_per_line(width_in: float, size_pt: float) -> int:
    # DejaVu Sans averages about 0.6 em per character: a conservative width so captions stay inside
    return max(4, int(width_in * 72 / (0.62 * size_pt)))


def tile_grid(title: str, rows: list[Row], *, cols: int | None = None, tile_in: float = 1.5,
              caption_lines: int = 1, header_in: float | None = None) -> Figure:
    """Rows of square tiles, each captioned above, each row headed on the left (if any row has a
    header). A row longer than `cols` wraps onto the next grid row."""
    cols = cols or max((len(r.tiles) for r in rows), default=1)
    grid: list[tuple[Row, list[Tile]]] = []
    for r in rows:
        for start in range(0, max(len(r.tiles), 1), cols):
            grid.append((r if start == 0 else Row([], ""), r.tiles[start:start + cols]))
    has_header = any(r.header for r in rows)
    if header_in is None:
        longest = max((len(line) for r in rows for line in r.header.split("\n")), default=0)
        header_in = (0.25 + longest * 0.62 * FONT_PT * 1.1 / 72) if has_header else 0.0
    caption_in = caption_lines * SMALL_PT * 1.3 / 72 + 0.08
    width = header_in + cols * (tile_in + 0.06) + 0.1
    height = 0.4 + len(grid) * (tile_in + caption_in + 0.08)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.03, h_pad=0.03, wspace=0.04, hspace=0.02)
    ratios = ([header_in] if has_header else []) + [tile_in] * cols
    gs = fig.add_gridspec(len(grid), len(ratios), width_ratios=ratios)
    width_chars = _chars_per_line(tile_in, SMALL_PT)
    first = 1 if has_header else 0
    for i, (row, tiles) in enumerate(grid):
        if has_header:
            ax = fig.add_subplot(gs[i, 0])
            ax.axis("off")
            if row.header:
                ax.text(0.95, 0.5, row.header, transform=ax.transAxes, ha="right", va="center",
                        fontsize=FONT_PT + (2 if row.bold else 0), color=row.colour,
                        fontweight="bold" if row.bold else "normal")
        for j in range(cols):
            ax = fig.add_subplot(gs[i, first + j])
            ax.axis("off")
            if j >= len(tiles):
                continue
            t = tiles[j]
            if t.image is None:
                ax.imshow(np.full((16, 16, 3), 205, np.uint8))
                ax.text(0.5, 0.5, t.missing, transform=ax.transAxes, ha="center", va="center",
                        fontsize=SMALL_PT, color="0.25")
            else:
                ax.imshow(t.image)
            if t.caption:
                ax.set_title(_caption(t.caption, width_chars, caption_lines), fontsize=SMALL_PT,
                             loc="left", pad=2, linespacing=1.15)
    fig.suptitle(title, fontsize=FONT_PT + 1)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as a PNG, exactly as laid out (a tight bbox would hide text drawn off the figure)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


# --- the three sheets the product writes ----------------------------------------------------
def face_sheet(title: str, by_label: dict[int | None, list[tuple[np.ndarray, str]]]) -> Figure:
    """The faces stage's contact sheet of one source: a row of (crop, caption) per label, headed
    real / fake / no label in the label's colour."""
    rows = [Row([Tile(img, cap) for img, cap in by_label[lab]], LABEL_NAMES[lab], LABEL_COLOURS[lab], bold=True)
            for lab in (0, 1, None) if by_label.get(lab)]
    return tile_grid(title, rows)


def duplicate_clusters(clusters: list[dict], images: dict[tuple[str, int], np.ndarray], radius: int,
                       per_cluster: int) -> Figure:
    """Dedupe's largest clusters (its report's `largest` entries), one row each: their first
    `per_cluster` example crops from `images` by (video_id, frame_index)."""
    rows = []
    for b in clusters:
        tiles = [Tile(images.get((e["video_id"], e["frame_index"])),
                      f"{e['video_id'].rsplit('/', 1)[-1]} #{e['frame_index']}", missing="crop not found")
                 for e in b["examples"][:per_cluster]]
        rows.append(Row(tiles, f"cluster {b['cluster']}\n{b['crops']} crops\n{b['videos']} videos"))
    return tile_grid(f"Largest duplicate clusters (radius {radius}), up to {per_cluster} crops each", rows,
                     cols=per_cluster, tile_in=1.4)


def dropped_sheet(rows: list[dict], images: list[np.ndarray | None], total: int, cols: int = 6) -> Figure:
    """`mesodata frames --contact-sheet`: each dropped frame (`rows`: video_id, frame_index, source,
    status, reason) with its picture, or a grey tile where it cannot be decoded."""
    tiles = []
    for row, img in zip(rows, images):
        fi = row["frame_index"]
        index = "?" if fi is None or fi != fi else int(fi)  # missing: None, NaN or pandas' NA
        caption = (f"{row['video_id'].rsplit('/', 1)[-1]} #{index}\n{row['source']}: {row['status']}\n"
                   f"{row.get('reason') or ''}")
        tiles.append(Tile(img, caption))
    return tile_grid(f"Dropped frames ({len(rows)} of {total})", [Row(tiles)], cols=cols, tile_in=1.9,
                     caption_lines=4)
