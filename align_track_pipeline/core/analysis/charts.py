"""A pivot as a chart: grouped bars, or a heat map when both axes have many values.

matplotlib draws it without a display or a browser (its SVG and Agg renderers, through a bare
`Figure`: no pyplot, no GUI backend), imported only when a chart is drawn so the commands
start fast. Every bar or heat-map cell carries its numbers in the SVG (`data-row`, `data-col`,
`data-value` and a `<title>` a browser shows on hover), so a chart can be checked, and read,
without looking at pixels.
"""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from align_track_pipeline.core.analysis.pivot import LABEL_JOIN
from align_track_pipeline.core.analysis.render import figure_cell, shorten
from align_track_pipeline.core.analysis.terminal import shorten_middle

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CHART_FORMATS = (".svg", ".png")
MANY = 6  # a heat map when both axes have more values than this
LABEL_WIDTH = 48  # axis labels are shortened to this (the data attributes keep them whole)
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}  # reproducible


@dataclass(frozen=True)
class Grid:
    """What a chart draws: one value (or None) per (row label, column label)."""

    title: str
    value_name: str
    rows: list[str]
    cols: list[str]
    values: list[list[float | None]]

    @property
    def heat_map(self) -> bool:
        return len(self.rows) > MANY and len(self.cols) > MANY

    def cells(self) -> list[tuple[str, str, float]]:
        """(row, col, value) of every drawn cell, in drawing order (row by row)."""
        return [(r, c, v) for r, line in zip(self.rows, self.values, strict=True)
                for c, v in zip(self.cols, line, strict=True) if _drawn(v)]


def shorts(labels: list[str]) -> list[str]:
    """Axis labels of at most about LABEL_WIDTH characters each: each part of a joined label
    (`adm | llm`) shortened alike, in its middle (names differ at their end: `...-v0.2`,
    `...-v0.3`, `affiliation-0.5`), and wider where that still made two labels alike."""
    width, widest = LABEL_WIDTH, max(map(len, labels), default=0)
    while True:
        shown = [_short(label, width) for label in labels]
        if len(set(shown)) == len(set(labels)) or width >= widest:  # or none is cut any more
            return shown
        width += 8


def _short(label: str, width: int) -> str:
    parts = label.split(LABEL_JOIN)
    return LABEL_JOIN.join(shorten_middle(p, max(12, width // len(parts)), start=0.5)
                           for p in parts)


def _drawn(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def figure(grid: Grid) -> Figure:
    """The chart as a matplotlib figure; each drawn cell's artist has the id `cell-<i>`, `i`
    its index in `grid.cells()`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=_size(grid), layout="constrained")
    ax = fig.add_subplot()
    (_heat_map if grid.heat_map else _bars)(fig, ax, grid)
    ax.set_title(shorten(grid.title, 100), fontsize=10)
    return fig


def _size(grid: Grid) -> tuple[float, float]:
    if grid.heat_map:
        return 4 + 0.55 * len(grid.cols), 3 + 0.35 * len(grid.rows)
    return 9, min(40, 1.5 + len(grid.rows) * max(0.4, 0.16 * len(grid.cols)))


def _bars(fig: Figure, ax, grid: Grid) -> None:
    """Horizontal grouped bars: a group per row (labels are long, they read best sideways),
    a bar per column, in the legend's order top to bottom."""
    height = 0.8 / max(1, len(grid.cols))
    labelled: set[int] = set()  # each column once in the legend
    legend = shorts(grid.cols)
    index = 0
    for i, line in enumerate(grid.values):
        for j, value in enumerate(line):
            if not _drawn(value):
                continue
            bars = ax.barh(i - 0.4 + height * (j + 0.5), value, height=height,
                             color=f"C{j % 10}",
                             label=None if j in labelled else legend[j])
            bars[0].set_gid(f"cell-{index}")
            ax.bar_label(bars, [figure_cell(float(value))], padding=2, fontsize=6)
            labelled.add(j)
            index += 1
    ax.set_yticks(range(len(grid.rows)), shorts(grid.rows), fontsize=8)
    ax.invert_yaxis()  # the first row on top, as in the table
    ax.set_xlabel(grid.value_name)
    ax.grid(axis="x", alpha=0.3)
    if labelled:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)


def _heat_map(fig: Figure, ax, grid: Grid) -> None:
    import numpy as np

    data = np.array([[v if _drawn(v) else np.nan for v in line] for line in grid.values],
                    dtype=float)
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax, label=grid.value_name, shrink=0.8)
    low, high = np.nanmin(data), np.nanmax(data)
    index = 0
    for i, line in enumerate(grid.values):
        for j, value in enumerate(line):
            if not _drawn(value):
                continue
            light = high == low or (value - low) / (high - low) < 0.6  # dark cell, light text
            text = ax.text(j, i, figure_cell(float(value)), ha="center", va="center", fontsize=6,
                           color="white" if light else "black")
            text.set_gid(f"cell-{index}")
            index += 1
    ax.set_xticks(range(len(grid.cols)), shorts(grid.cols), rotation=60, ha="right",
                  fontsize=7)
    ax.set_yticks(range(len(grid.rows)), shorts(grid.rows), fontsize=7)


def chart_svg(grid: Grid) -> str:
    """The chart as an SVG document, each drawn cell's numbers in its attributes."""
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "align-track"}):
        figure(grid).savefig(out, format="svg", metadata=_NO_METADATA)
    cells = grid.cells()

    def annotate(match: re.Match) -> str:
        row, col, value = cells[int(match[1])]
        attrs = (f'data-row="{html.escape(row)}" data-col="{html.escape(col)}" '
                 f'data-value="{value!r}"')
        tip = html.escape(f"{row}, {col}: {figure_cell(float(value))}", quote=False)
        return f'<g id="cell-{match[1]}" {attrs}>\n<title>{tip}</title>'

    return re.sub(r'<g id="cell-(\d+)">', annotate, out.getvalue())


def inline_svg(grid: Grid) -> str:
    """The SVG for a page: no XML prolog, no namespace declarations (an HTML parser puts
    `<svg>` in its namespace), so the page names no address at all."""
    svg = chart_svg(grid)
    svg = svg[svg.index("<svg"):]
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg, count=3)


def write_chart(path: Path, grid: Grid) -> None:
    """`.svg` or `.png` (150 dpi), by the file's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".svg":
        path.write_text(chart_svg(grid), encoding="utf-8")
    else:
        figure(grid).savefig(path, format="png", dpi=150, metadata={"Software": None})
