"""Plain-text tables for the reports a person reads on the terminal."""

from __future__ import annotations

from typing import Sequence


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)


def print_first(lines: Sequence[str], limit: int, indent: str = "    ", where: str = "") -> None:
    """The first `limit` lines, then how many more there are (and `where` they all are)."""
    for line in lines[:limit]:
        print(f"{indent}{line}")
    if len(lines) > limit:
        print(f"{indent}... and {len(lines) - limit} more{f' ({where})' if where else ''}")


def print_table(title: str, rows: Sequence[dict], columns: Sequence[str]) -> None:
    print(f"\n{title}")
    print(format_table(rows, columns))
