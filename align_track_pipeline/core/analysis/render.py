"""How results look: cells as text, Markdown and self-contained HTML, and the side-by-side view
of one scene (one column per run); terminal tables are in `terminal`."""

from __future__ import annotations

import html
import math
import re

# The fields of a comparison row, top to bottom, in the side-by-side view.
SIDE_BY_SIDE_FIELDS = [("ADM", "adm"), ("LLM", "llm_backbone"),
                       ("target", "alignment_target_id"), ("target KDMA", "kdma_values"),
                       ("scene", "scene_id"), ("scene index", "scene_index"),
                       ("choice", "choice_index"), ("action", "action_type"),
                       ("decision", "decision_text"), ("justification", "justification"),
                       ("decision KDMA", "decision_kdma"), ("time (s)", "timing_seconds"),
                       ("scores", "scenario_scores")]


def cell(value: object) -> str:
    """A value as text: maps as `k=v`, lists joined, floats to 4 significant digits (`.4g`)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(map(cell, value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def figure_cell(value: object) -> str:
    """A number of a results table (`report`, charts): 4 significant digits written out, so
    that right-aligned numbers line up (46.80, 0.002477, 12346); other values as `cell`."""
    if isinstance(value, float) and 1e-4 <= abs(value) < 1e15:
        return f"{value:.{decimals(value)}f}"
    return cell(value)


def decimals(value: float, significant: int = 4) -> int:
    """Decimal places that show `value` to `significant` digits, without an exponent: 53.31,
    0.9387, 0.002198, 12346 (1e-4 <= |value|; smaller numbers keep an exponent)."""
    if value == 0 or not math.isfinite(value):
        return 0
    return max(0, significant - 1 - math.floor(math.log10(abs(value))))


def is_number(value: object) -> bool:
    """Shown right-aligned: ints and floats (not booleans)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def numeric_columns_of(rows: list[list[object]], width: int) -> list[bool]:
    """Per column: every non-empty cell is a number (an empty column aligns either way)."""
    columns = [[v for v in col if v is not None] for col in zip(*rows, strict=True)] \
        if rows else [[] for _ in range(width)]
    return [all(map(is_number, col)) for col in columns]


# Escape sequences (CSI, OSC and the like, up to their terminator) and every other control
# character but tab and newline: C0, DEL, C1. Data must never drive the terminal (clear it,
# retitle it, plant a hidden link).
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]?|\][^\x07\x1b]*(\x07|\x1b\\)?|.)?"
                      r"|\x9b[0-?]*[ -/]*[@-~]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]", re.DOTALL)


def terminal_safe(text: str) -> str:
    """`text` with each escape sequence or control character shown as its code (`\\x1b]8;;`),
    so it is visible and inert on a terminal."""
    return _ESCAPES.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def shorten(text: str, width: int) -> str:
    """One line of at most `width` characters (display only: data is never cut)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def markdown_cell(text: str) -> str:
    """Text as inert Markdown table-cell content: `& < >` as HTML entities (no raw HTML
    reaches a renderer), `|` escaped, newlines as `<br>` (the one tag written)."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", "<br>")


def markdown_table(header: list[str], rows: list[list[object]], width: int | None = None,
                   numbers_right: bool = False) -> str:
    show = figure_cell if numbers_right else cell

    def md(value: object) -> str:
        return markdown_cell(show(value) if width is None else shorten(show(value), width))

    right = numeric_columns_of(rows, len(header)) if numbers_right else [False] * len(header)
    rules = ["---:|" if r else "---|" for r in right]
    lines = ["| " + " | ".join(map(md, header)) + " |", "|" + "".join(rules)]
    lines += ["| " + " | ".join(map(md, row)) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[object]], numbers_right: bool = False) -> str:
    def td(value: object) -> str:
        if numbers_right and is_number(value):
            return f'<td class="n">{html.escape(figure_cell(value))}</td>'
        return f"<td>{html.escape(cell(value))}</td>"

    head = "".join(f"<th>{html.escape(cell(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(map(td, row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.35em .6em;
vertical-align:top;text-align:left;white-space:pre-wrap;max-width:32em}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{white-space:pre-wrap;background:#f8f8f8;padding:.6em;border:1px solid #eee}"""


def html_page(title: str, body: str) -> str:
    """A page with no script and no external resource: it opens anywhere, offline."""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def side_by_side(rows: list[dict]) -> tuple[list[str], list[list[object]]]:
    """One scene's comparison rows turned sideways: a column per run (headed by its run
    directory), a row per field."""
    header = ["", *(r["experiment_path"] for r in rows)]
    return header, [[label, *(r[key] for r in rows)] for label, key in SIDE_BY_SIDE_FIELDS]


def by_scene(rows: list[dict]) -> dict[tuple[str | None, str | None], list[dict]]:
    """Comparison rows grouped by (scenario, scene id), in their order."""
    groups: dict[tuple[str | None, str | None], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["scenario_id"], row["scene_id"]), []).append(row)
    return groups


def by_probe(rows: list[dict]) -> list[list[dict]]:
    """One scene id's rows grouped by what the runs were shown (probe and choices), in order
    of first appearance: runs of other versions of a scenario can share a scene id and yet
    have seen another probe or another choice list."""
    groups: dict[tuple[str | None, str | None], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["probe_text"], row["choices_text"]), []).append(row)
    return list(groups.values())
