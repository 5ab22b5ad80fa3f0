"""Tables for a terminal: control characters shown as their codes, long texts shortened, and
the whole table fitted to the terminal's width when one is given.

Paths are shortened in the middle: their end (a live run's timestamp folder) is what tells
runs apart. Other texts lose their end. Display only: the data is never cut."""

from __future__ import annotations

import os
from typing import TextIO

from align_track_pipeline.core.analysis.render import (
    cell,
    figure_cell,
    numeric_columns_of,
    shorten,
    terminal_safe,
)

GAP = "  "  # between columns
# A column is never shortened below this (or its own width): it is left out instead. Paths
# keep more: the end that tells runs apart.
NARROWEST = 12
NARROWEST_PATH = 30
# Columns holding paths: shortened in the middle.
PATH_COLUMNS = frozenset({"experiment_path", "partition_key", "run directory"})


def terminal_width(stream: TextIO) -> int:
    """`$COLUMNS`, else the width of the terminal `stream` is, else 80 (a pipe or a file)."""
    given = os.environ.get("COLUMNS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):  # no file descriptor (a captured stream), or no size
        pass
    return 80


def shorten_middle(text: str, width: int, start: float = 0.25) -> str:
    """One line of at most `width` characters, keeping its start (`start` of what is kept)
    and its end."""
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    if width <= 3:
        return line[-width:]
    head = int((width - 3) * start)
    return line[:head] + "..." + line[len(line) - (width - 3 - head):]


def _fit(name: str, text: str, width: int) -> str:
    return (shorten_middle if name in PATH_COLUMNS else shorten)(text, width)


def text_table(header: list[str], rows: list[list[object]], width: int = 40,
               keep: frozenset[str] | set[str] = frozenset(),
               total: int | None = None, numbers_right: bool = False,
               drop_first: frozenset[str] | set[str] = frozenset()) -> tuple[str, list[str]]:
    """Aligned columns: each cell shortened to `width` (except in the `keep` columns: links
    must stay whole), control characters and escape sequences made visible. With `total`,
    the columns are narrowed further so that each line fits `total` characters, and the
    rightmost ones that still do not fit are left out, those of `drop_first` before any
    other. With `numbers_right`, numbers are rounded for reading and columns of numbers
    right-aligned. Returns the table and the names of the columns left out."""
    show = figure_cell if numbers_right else cell
    right = numeric_columns_of(rows, len(header)) if numbers_right else [False] * len(header)
    header = [terminal_safe(h) for h in header]
    cells = [[" ".join(terminal_safe(show(v)).split()) for v in row] for row in rows]
    natural = [max(map(len, col)) for col in zip(header, *cells, strict=True)]
    fixed = [h in keep for h in header]
    caps = [w if f else min(w, width) for w, f in zip(natural, fixed, strict=True)]
    if total is not None:
        floors = [min(w, NARROWEST_PATH if h in PATH_COLUMNS else NARROWEST)
                  for h, w in zip(header, caps, strict=True)]
        first = [h in drop_first for h in header]
        caps = _within(caps, floors, fixed, total, first)
    shown = [i for i, cap in enumerate(caps) if cap]
    lines = [[_align(_fit(header[i], line[i], caps[i]), caps[i], right[i]) for i in shown]
             for line in [header, *cells]]
    lines.insert(1, ["-" * caps[i] for i in shown])
    return ("\n".join(GAP.join(line).rstrip() for line in lines),
            [h for h, cap in zip(header, caps, strict=True) if not cap])


def _align(text: str, width: int, right: bool) -> str:
    return text.rjust(width) if right else text.ljust(width)


def _within(caps: list[int], floors: list[int], fixed: list[bool], total: int,
            first: list[bool]) -> list[int]:
    """Column widths (0: left out) whose sum, with the gaps, is at most `total`: the widest
    shortenable columns narrowed first, none below its floor; while even that does not fit,
    the rightmost `first` column is left out, then the rightmost shortenable one (the first
    column and the other `keep` ones always stay: a link cut short is no link)."""
    caps = list(caps)
    droppable = ([i for i, f in enumerate(fixed) if not f and i > 0 and not first[i]]
                 + [i for i, f in enumerate(first) if f and i > 0])  # popped from the end
    while True:
        shown = [i for i, w in enumerate(caps) if w]
        budget = total - len(GAP) * (len(shown) - 1) - sum(caps[i] for i in shown if fixed[i])
        flexible = [i for i in shown if not fixed[i]]
        cap = _common_cap([caps[i] for i in flexible], [floors[i] for i in flexible], budget)
        if cap is None and droppable:
            caps[droppable.pop()] = 0
            continue
        return [max(floors[i], min(w, cap if cap is not None else 0)) if i in flexible else w
                for i, w in enumerate(caps)]


def _common_cap(widths: list[int], floors: list[int], budget: int) -> int | None:
    """The largest cap c with sum(max(floor, min(width, c))) <= budget; None when even the
    floors do not fit."""
    def used(cap: int) -> int:
        return sum(max(f, min(w, cap)) for w, f in zip(widths, floors, strict=True))

    if sum(floors) > budget:
        return None
    cap = max(widths, default=0)
    while used(cap) > budget:
        cap -= 1
    return cap
