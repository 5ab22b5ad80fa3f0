"""One self-contained page of the research numbers: scores by ADM and target, decision time by
ADM and LLM, and how often ADMs agree on a scene, each a chart above its table.

The page has no script and names no address (charts are inline SVG), so it opens anywhere,
offline, and can be mailed or attached as it is.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import duckdb

from align_track_pipeline.core.analysis import charts
from align_track_pipeline.core.analysis.charts import Grid, inline_svg
from align_track_pipeline.core.analysis.connection import (
    map_keys,
    open_tables,
    sql_literal,
    table_files,
    union_option,
)
from align_track_pipeline.core.analysis.output import pivot_grid
from align_track_pipeline.core.analysis.pivot import Pivot, PivotSpec, pivot
from align_track_pipeline.core.analysis.render import html_page, html_table
from align_track_pipeline.core.atomic import write_text_atomically

TITLE = "align-track dashboard"
TIME = PivotSpec("experiments", ("adm",), ("llm_backbone",), "timing_avg_seconds", "mean")

# One unit of agreement: a scene of a scenario under one alignment target (ADMs aligned to
# different targets are meant to differ). It counts when at least two ADMs decided it; they
# agree when every run of every ADM chose the same action.
AGREEMENT_SQL = """
WITH decisions AS (
    SELECT scenario_id, alignment_target_id, adm,
           coalesce(scene_id, md5(concat_ws(chr(0), probe_text, choices_text))) AS scene,
           coalesce(action_id, 'choice ' || choice_index) AS action
    FROM scenes WHERE action_id IS NOT NULL OR choice_index IS NOT NULL
), units AS (
    SELECT scenario_id, count(DISTINCT action) = 1 AS agreed
    FROM decisions GROUP BY scenario_id, alignment_target_id, scene
    HAVING count(DISTINCT adm) >= 2
)
SELECT scenario_id, count(*) AS compared, count(*) FILTER (agreed) AS agreed,
       count(*) FILTER (agreed) / count(*) AS share
FROM units GROUP BY scenario_id ORDER BY scenario_id
"""
# The experiments columns the page reads, copied into memory once: each of its six queries on
# them then takes a millisecond instead of opening every partition file again.
PAGE_EXPERIMENTS = ["adm", "llm_backbone", "alignment_target_id", "scores", "timing_avg_seconds"]
AGREEMENT_HEADER = ["scenario_id", "scenes compared", "all ADMs agree", "agreement share"]


@dataclass(frozen=True)
class Section:
    anchor: str  # the section's id on the page
    title: str
    note: str
    grid: Grid
    header: list[str]
    rows: list[list[object]]


def score_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The scores worth a chart: the measures, not the counts (`num_probes`, `num_scored`)."""
    return [k for k in map_keys(con, "experiments", "scores") if not k.startswith("num_")]


def score_title(name: str) -> str:
    """A score's section title: `kdma.X` is the KDMA value the scorer measured in the ADM's
    choices, to read beside the target's."""
    if name.startswith("kdma."):
        return f"Measured {name.removeprefix('kdma.')} (KDMA) by ADM and target"
    return f"{'Alignment score' if name == 'score' else name.capitalize()} by ADM and target"


def sections(con: duckdb.DuckDBPyConnection) -> list[Section]:
    scores = [_pivot_section(con, "scores-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", name),
                             score_title(name),
                             "Mean over the runs of each ADM, LLM and alignment target"
                             + ("; the target's own value is its KDMA value "
                                "(experiments' kdma_values)." if name.startswith("kdma.")
                                else "."),
                             PivotSpec("experiments", ("adm", "llm_backbone"),
                                       ("alignment_target_id",), f"scores.{name}", "mean"))
              for name in score_names(con)]
    time = _pivot_section(con, "decision-time", "Decision time by ADM and LLM",
                          "Each run's mean seconds per action (one per run directory and "
                          "target), averaged over the runs of each ADM and LLM: a run counts "
                          "once, however many actions it took.", TIME)
    return [*scores, time, agreement_section(con)]


def _pivot_section(con: duckdb.DuckDBPyConnection, anchor: str, title: str, note: str,
                   spec: PivotSpec) -> Section:
    result: Pivot = pivot(con, spec)
    return Section(anchor, title, note, pivot_grid(result, spec.title, f"mean of {spec.values}"),
                   result.header, result.rows)


def agreement_rows(con: duckdb.DuckDBPyConnection) -> list[list[object]]:
    """Per scenario: scenes compared, scenes where all ADMs agree, and the share."""
    return [list(row) for row in con.sql(AGREEMENT_SQL).fetchall()]


def agreement_section(con: duckdb.DuckDBPyConnection) -> Section:
    rows = agreement_rows(con)
    grid = Grid("share of scenes where all ADMs chose the same action", "agreement share",
                [r[0] for r in rows], ["agreement share"], [[r[3]] for r in rows])
    note = ("A scene of a scenario under one alignment target counts when at least two ADMs "
            "decided it; the ADMs agree when every run of every ADM chose the same action. "
            "Scenes without a scene id (before 2024-09) are told apart by their probe and "
            "choices.")
    return Section("agreement", "How often ADMs agree, by scenario", note, grid,
                   AGREEMENT_HEADER, rows)


def page(parts: list[Section], drawn: dict[str, str] | None = None) -> str:
    """`drawn`: charts of an earlier page by their key (`chart_key`), used again as they are
    when their numbers did not change (drawing one takes matplotlib most of a second)."""
    body = []
    for part in parts:
        chart = "<p>Nothing to compare yet.</p>"
        if part.grid.cells():
            key = chart_key(part.grid)
            svg = (drawn or {}).get(key) or inline_svg(part.grid)
            chart = f'<figure data-chart="{key}">{svg}</figure>'
        body.append(f'<section id="{html.escape(part.anchor)}"><h2>{html.escape(part.title)}'
                    f"</h2><p>{html.escape(part.note)}</p>{chart}"
                    f"{html_table(part.header, part.rows, numbers_right=True)}</section>")
    return html_page(TITLE, "\n".join(body))


_FIGURE = re.compile(r'<figure data-chart="([0-9a-f]{32})">(<svg.*?</svg>\s*)</figure>', re.S)


def chart_key(grid: Grid) -> str:
    """The same numbers drawn by the same code and matplotlib give the same key. Numbers to
    12 significant digits: DuckDB's parallel means differ in the last bits from one query to
    the next."""
    values = [[v if v is None else float(f"{v:.12g}") for v in row] for row in grid.values]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(Path(charts.__file__).read_bytes())
    digest.update(metadata.version("matplotlib").encode())
    digest.update(repr((grid.title, grid.value_name, grid.rows, grid.cols, values)).encode())
    return digest.hexdigest()


def drawn_charts(path: Path) -> dict[str, str]:
    """Key -> SVG of each chart on the page at `path` (none when it is missing or not ours)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    return {m[1]: m[2] for m in _FIGURE.finditer(text)}


@dataclass(frozen=True)
class Written:
    path: Path
    sections: int
    scenarios: int


def page_tables(data_dir: Path) -> duckdb.DuckDBPyConnection:
    """The page's tables: `scenes` as `open_tables` gives it (the comparison file while it is
    current), `experiments` the columns the page reads, in memory."""
    data_dir = Path(data_dir).resolve()
    con = open_tables(data_dir, ["scenes"])
    con.execute(f"CREATE TEMP TABLE experiments AS SELECT {', '.join(PAGE_EXPERIMENTS)} "
                f"FROM read_parquet({sql_literal(table_files(data_dir, 'experiments'))}"
                f"{union_option()})")
    return con


def write_dashboard(data_dir: Path, path: Path) -> Written:
    """The page from the tables in `data_dir`, written atomically to `path`."""
    parts = sections(page_tables(data_dir))
    write_text_atomically(path, page(parts, drawn_charts(path)))
    return Written(path, len(parts), len(parts[-1].rows))
