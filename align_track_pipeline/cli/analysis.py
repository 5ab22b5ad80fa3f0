"""`search`, `compare`, `report`, `dashboard` and `export`: answers from the Parquet tables,
without a UI.

Exit 0 with the answer (an empty one when nothing matches); 2 when the request cannot be
answered as asked (the message says what is valid) or when there are no tables yet; 1 when a
table file cannot be read (the message names it and says to run `align-track ingest`). These
commands read the tables only and never load Dagster, so they answer in a fraction of a second.
"""

from __future__ import annotations

import argparse
import html
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb

from align_track_pipeline.cli.arguments import count, file_path, folder
from align_track_pipeline.cli.exits import Result
from align_track_pipeline.core.analysis.compare import compare, near_misses
from align_track_pipeline.core.analysis.connection import (
    AnalysisError,
    QueryError,
    broken_files_message,
    open_tables,
    tolerating_older_files,
    vanished_files_message,
)
from align_track_pipeline.core.analysis.dashboard import write_dashboard
from align_track_pipeline.core.analysis.export import FORMATS, export, export_format
from align_track_pipeline.core.analysis.filters import Filters, parse_min_score
from align_track_pipeline.core.analysis.links import UNAVAILABLE, run_links
from align_track_pipeline.core.analysis.output import write_report
from align_track_pipeline.core.analysis.owned import refuse_output
from align_track_pipeline.core.analysis.pivot import AGGREGATES, PivotSpec, pivot, split_columns
from align_track_pipeline.core.analysis.render import (
    by_probe,
    by_scene,
    html_page,
    html_table,
    shorten,
    side_by_side,
    terminal_safe,
)
from align_track_pipeline.core.analysis.search import (
    SHOWN_COLUMNS,
    parse_columns,
    parse_sort,
    search,
)
from align_track_pipeline.core.analysis.terminal import terminal_width, text_table
from align_track_pipeline.core.locations import default_data_dir, fingerprint_cache_path
from align_track_pipeline.core.schema import TABLES
from align_track_pipeline.core.trackers.registry import Settings, create_all

# The columns of a compare table in the terminal, one row per run: its run directory first.
_COMPARE_SHOWN = ["experiment_path", "adm", "llm_backbone", "alignment_target_id",
                  "kdma_values", "scene_index", "choice_index", "decision_text",
                  "justification", "decision_kdma", "timing_seconds", "scenario_scores"]
_COMPARE_HEADER = ["run directory", *_COMPARE_SHOWN[1:]]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the five commands on the `align-track` parser."""
    cmd = _command(sub, "search", "rows of a table matching filters, with links to their runs",
                   cmd_search)
    _filter_options(cmd, default_table="scenes")
    cmd.add_argument("--limit", type=count, default=20, help="at most N rows (0: all; default 20)")
    cmd.add_argument("--sort", action="append", default=[], metavar="COL[:desc]",
                     help="sort by this column (ascending, or descending with :desc; nulls "
                          "last); repeatable: the first given sorts first")
    cmd.add_argument("--columns", metavar="A,B,...",
                     help="only these columns, in this order (the terminal table and --json)")
    cmd.add_argument("--json", action="store_true",
                     help='print {"count": N, "more": true|false, "rows": [...]}: every column, '
                          'full texts ("more": rows beyond --limit match too)')
    cmd.add_argument("--no-links", dest="links", action="store_false",
                     help="no links to the rows' MLflow and Aim runs (not looked up)")
    cmd.add_argument("--mlflow-uri", default=None,
                     help="the MLflow store to link rows to (env MLFLOW_TRACKING_URI; default "
                          "sqlite in the data dir)")
    cmd.add_argument("--mlflow-experiment", default=None,
                     help="MLflow experiment name (default align-system)")

    cmd = _command(sub, "compare", "what each run decided on one scenario, side by side",
                   cmd_compare)
    cmd.add_argument("scenario", help="a scenario_id, e.g. DryRunEval.MJ1")
    cmd.add_argument("--scene", help="only this scene_id, e.g. P1")
    cmd.add_argument("--json", action="store_true",
                     help='print {"scenario_id": S, "count": N, "rows": [...]}')
    cmd.add_argument("--html", type=file_path, metavar="FILE",
                     help="also write a self-contained page (no network) to FILE")

    spec = PivotSpec()
    cmd = _command(sub, "report", "a pivot table or chart to .xlsx, .csv, .md, .html, .svg or "
                   ".png", cmd_report)
    cmd.add_argument("--table", choices=list(TABLES), default=spec.table,
                     help="the table the pivot reads (default %(default)s)")
    cmd.add_argument("--rows", default=",".join(spec.rows), metavar="COL[,COL...]",
                     help=f"row labels, one column or several (default {','.join(spec.rows)})")
    cmd.add_argument("--cols", default=",".join(spec.cols), metavar="COL[,COL...]",
                     help=f"column labels, one column or several (default "
                          f"{','.join(spec.cols)}: an ADM on two LLMs is two columns)")
    cmd.add_argument("--values", default=spec.values,
                     help=f"the value: a numeric column or MAP.KEY, e.g. scores.score "
                          f"(default {spec.values})")
    cmd.add_argument("--agg", choices=list(AGGREGATES), default=spec.agg,
                     help="how the values of a cell combine (default %(default)s)")
    cmd.add_argument("-o", "--output", type=file_path, metavar="FILE",
                     help="the format follows the extension: .xlsx .csv .md (tables), .svg "
                          ".png (a chart: grouped bars, or a heat map when both axes have "
                          "many values), .html (the chart above the table); without it, the "
                          "table is printed")

    cmd = _command(sub, "dashboard", "one self-contained page: scores by ADM and target, "
                   "decision time by ADM and LLM, ADM agreement by scenario", cmd_dashboard)
    cmd.add_argument("-o", "--output", type=file_path, required=True, metavar="FILE.html",
                     help="the page to write (no script, no network: opens anywhere)")

    cmd = _command(sub, "export", "the rows of a table matching filters, to a file", cmd_export)
    _filter_options(cmd, default_table="scenes")
    cmd.add_argument("--format", choices=list(FORMATS),
                     help="default: from the file's extension")
    cmd.add_argument("-o", "--output", type=file_path, required=True, metavar="FILE",
                     help="the file to write, its format from its extension unless --format "
                          "says; - for stdout (with --format)")


def _command(sub: argparse._SubParsersAction, name: str, help_: str,
             func) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=help_)
    cmd.add_argument("--data-dir", type=folder, default=None,
                     help="where ingest wrote the tables (env ALIGN_TRACK_DATA_DIR; default "
                          "./align-track-data)")
    cmd.set_defaults(func=_answering(name, func), loads_dagster=False)
    return cmd


def _filter_options(cmd: argparse.ArgumentParser, default_table: str) -> None:
    cmd.add_argument("--table", choices=list(TABLES), default=default_table,
                     help="experiments (a row per experiment row) or scenes (a row per "
                          "decision); default %(default)s")
    cmd.add_argument("--adm", help="ADM name or the Hydra config it came from (adm_config) "
                     "(exact; * is a wildcard)")
    cmd.add_argument("--llm", help="LLM backbone (exact; * is a wildcard)")
    cmd.add_argument("--target", help="alignment target id (exact; * is a wildcard)")
    cmd.add_argument("--scenario", help="scenario id (scenes; exact; * is a wildcard)")
    cmd.add_argument("--scene", help="scene id (scenes; exact; * is a wildcard)")
    cmd.add_argument("--min-score", action="append", default=[], metavar="NAME=VALUE",
                     help="a score at least VALUE (experiments: scores, scenes: "
                          "scenario_scores); repeatable")
    cmd.add_argument("--where", metavar="SQL",
                     help="one SQL condition over the table's columns, e.g. "
                          "\"timing_seconds > 30\"")


def _answering(name: str, func):
    """Run a command; a request that cannot be answered prints why and exits 2. When DuckDB
    fails reading the tables, the unreadable files are named, with the repair, and it exits
    1; never a traceback. With `--json`, stdout then gets `{"error": why}`."""
    def run(args: argparse.Namespace) -> tuple[int, dict | None]:
        data = _data_dir(args)
        if gone := vanished_files_message(data, fingerprint_cache_path(data)):
            print(f"align-track {name}: warning: {terminal_safe(gone)}", file=sys.stderr)
        def warn(text: str) -> None:
            print(f"align-track {name}: warning: {terminal_safe(text)}", file=sys.stderr)

        try:
            return tolerating_older_files(data, lambda: func(args), warn)
        except duckdb.InterruptException as exc:  # Ctrl-C during a query: exit 130
            raise KeyboardInterrupt(str(exc)) from exc
        except (QueryError, duckdb.Error) as exc:
            broken = broken_files_message(_data_dir(args))
            if broken is None and isinstance(exc, QueryError):
                return _refused(name, args, 2, str(exc))
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            return _refused(name, args, 1, broken or first)
        except AnalysisError as exc:
            return _refused(name, args, 2, str(exc))
    return run


def _refused(name: str, args: argparse.Namespace, code: int,
             message: str) -> tuple[int, dict | None]:
    """The one line on stderr; with `--json` also `{"error": ...}` as the result."""
    print(f"align-track {name}: {terminal_safe(message)}", file=sys.stderr)
    return code, {"error": message} if getattr(args, "json", False) else None


def _data_dir(args: argparse.Namespace) -> Path:
    return (args.data_dir or Path(default_data_dir())).resolve()


def _tracker_options(args: argparse.Namespace) -> dict[str, str]:
    """The store options given on the command line (they win over the environment)."""
    given = {"mlflow_uri": args.mlflow_uri, "mlflow_experiment": args.mlflow_experiment}
    return {k: v for k, v in given.items() if v}


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(adm=args.adm, llm=args.llm, target=args.target, scenario=args.scenario,
                   scene=args.scene, min_scores=tuple(map(parse_min_score, args.min_score)),
                   where=args.where)


def cmd_search(args: argparse.Namespace) -> Result:
    data = _data_dir(args)
    order = parse_sort(args.sort, args.table)
    columns = parse_columns(args.columns, args.table) if args.columns else None
    found = search(open_tables(data, [args.table]), args.table, _filters(args),
                   args.limit or None, order)
    per_row = _links(args, data, found.rows) if args.links else [{} for _ in found.rows]
    if args.json:
        rows = [{c: row[c] for c in columns or row} | ({"links": link} if link else {})
                for row, link in zip(found.rows, per_row, strict=True)]
        return 0, {"count": len(rows), "more": found.more, "rows": rows}
    _print_found(columns or SHOWN_COLUMNS[args.table], found.rows, per_row,
                 chosen=columns is not None)
    print(_count_line(len(found.rows), found.more, args.table))
    return 0, None


def _links(args: argparse.Namespace, data: Path, rows: list[dict]) -> list[dict[str, str]]:
    """Each row's links to its runs, tracker name -> address; a tracker whose links cannot
    be looked up is said once on stderr."""
    links = run_links(create_all(Settings(data, _tracker_options(args))), args.table, rows)
    for name, reason in links.unavailable.items():
        print(f"align-track search: {name} links unavailable: {terminal_safe(reason)}",
              file=sys.stderr)
    return [link | dict.fromkeys(links.unavailable, UNAVAILABLE) for link in links.rows]


def _print_found(columns: list[str], rows: list[dict], links: list[dict[str, str]],
                 chosen: bool) -> None:
    """The rows as a table as wide as the terminal, links whole; says what did not fit.
    Columns the user `chosen` (--columns) go before the links when not all fit."""
    if not rows:
        return
    trackers = sorted({name for link in links for name in link})
    link_columns = [f"{t} link" for t in trackers]
    header = [*columns, *link_columns]
    cells = [[row[c] for c in columns] + [link.get(t) for t in trackers]
             for row, link in zip(rows, links, strict=True)]
    width = terminal_width(sys.stdout)
    table, hidden = text_table(header, cells, keep=set(link_columns), total=width,
                               drop_first=set(link_columns) if chosen else set())
    print(table)
    if left := [h for h in hidden if h not in link_columns]:
        choose = "" if chosen else "--columns A,B,... to choose, "
        print(f"({len(left)} more column{'s' * (len(left) != 1)} did not fit {width} "
              f"characters: {choose}COLUMNS=N to widen)")
    if links_left := [h for h in hidden if h in link_columns]:
        print(f"({' and '.join(links_left)} did not fit {width} characters: COLUMNS=N to "
              "widen, --json to have them)")


def _count_line(count: int, more: bool, table: str) -> str:
    if not count:
        return f"no {table} rows match"
    shown = f"{count} {table} row{'s' * (count != 1)}"
    return f"{shown} (more match: --limit N or --limit 0 for all)" if more else shown


def cmd_compare(args: argparse.Namespace) -> Result:
    if args.html:
        refuse_output(_data_dir(args), args.html, "--html")
    rows = compare(_data_dir(args), args.scenario, args.scene)
    if args.html:
        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(_compare_page(args.scenario, rows), encoding="utf-8")
    if args.json:
        return 0, {"scenario_id": args.scenario, "count": len(rows), "rows": rows}
    if not rows:
        print(f"no scenes of scenario {args.scenario!r}"
              + (f" with scene id {args.scene!r}" if args.scene else "") + "; "
              + terminal_safe(near_misses(_data_dir(args), args.scenario, args.scene)))
    for (_, scene), group in by_scene(rows).items():
        _print_scene(f"{args.scenario} / scene {scene or '(no id)'}", group)
    if args.html:
        print(f"\nwrote {args.html}")
    return 0, None


def _print_scene(title: str, rows: list[dict]) -> None:
    """One scene id: per distinct probe and choice list, that text once, then the runs that
    were shown it."""
    blocks = by_probe(rows)
    versions = f", {len(blocks)} different probes or choice lists" if len(blocks) > 1 else ""
    print(f"\n== {terminal_safe(title)}: {_runs(len(rows))}{versions} ==")
    for number, block in enumerate(blocks, 1):
        if len(blocks) > 1:
            print(f"\n-- {number} of {len(blocks)}: {_runs(len(block))} --")
        print(f"probe: {shorten(terminal_safe(block[0]['probe_text'] or ''), 200)}")
        print("choices:")
        for line in (block[0]["choices_text"] or "").splitlines():
            print(f"  {shorten(terminal_safe(line), 120)}")
        table, _ = text_table(_COMPARE_HEADER, [[r[c] for c in _COMPARE_SHOWN] for r in block],
                              width=36)
        print(table)


def _runs(count: int) -> str:
    return f"{count} run{'s' * (count != 1)}"


def _compare_page(scenario: str, rows: list[dict]) -> str:
    """Per scene, per distinct probe and choice list: that text once, then the runs that
    were shown it side by side."""
    parts = [] if rows else ["<p>No scenes match.</p>"]
    for (_, scene), group in by_scene(rows).items():
        blocks = by_probe(group)
        parts.append(f"<h2>Scene {html.escape(scene or '(no id)')}: {_runs(len(group))}</h2>")
        for number, block in enumerate(blocks, 1):
            if len(blocks) > 1:
                parts.append(f"<h3>Probe and choices {number} of {len(blocks)}: "
                             f"{_runs(len(block))}</h3>")
            parts += [f"<h4>Probe</h4><pre>{html.escape(block[0]['probe_text'] or '')}</pre>",
                      f"<h4>Choices</h4><pre>{html.escape(block[0]['choices_text'] or '')}</pre>",
                      html_table(*side_by_side(block))]
    return html_page(f"Scenario {scenario}: {len(rows)} decisions", "\n".join(parts))


def cmd_report(args: argparse.Namespace) -> Result:
    spec = PivotSpec(args.table, split_columns(args.rows), split_columns(args.cols),
                     args.values, args.agg)
    if args.output is not None:
        refuse_output(_data_dir(args), args.output)
    result = pivot(open_tables(_data_dir(args), [spec.table]), spec)
    size = f"{len(result.rows)} rows x {len(result.col_labels)} columns"
    if args.output is None:
        print(f"{terminal_safe(spec.title)}, {size}\n")
        table, _ = text_table(result.header, result.rows, keep=set(result.header),
                              numbers_right=True)
        print(table)
        return 0, None
    write_report(args.output, spec.title, result, f"{spec.agg} of {spec.values}")
    print(f"wrote {args.output}: {spec.title}, {size}")
    return 0, None


def cmd_dashboard(args: argparse.Namespace) -> Result:
    if args.output.suffix.lower() not in (".html", ".htm"):
        raise AnalysisError(f"cannot write {args.output.name!r}: the dashboard is a page, "
                            "the file name must end in .html")
    refuse_output(_data_dir(args), args.output)
    written = write_dashboard(_data_dir(args), args.output)
    print(f"wrote {written.path}: {written.sections} charts, {written.scenarios} scenarios "
          "compared")
    return 0, None


def cmd_export(args: argparse.Namespace) -> Result:
    if str(args.output) == "-":
        return _export_to_stdout(args)
    refuse_output(_data_dir(args), args.output)
    fmt = export_format(args.output, args.format)
    count = export(_data_dir(args), args.table, _filters(args), args.output, fmt)
    print(f"wrote {count} {args.table} rows to {args.output} ({fmt})")
    return 0, None


def _export_to_stdout(args: argparse.Namespace) -> Result:
    """`-o -`: the file written in a temporary folder, then copied to stdout (DuckDB writes
    files only); what a file export prints goes to stderr."""
    if args.format is None:
        raise AnalysisError("-o - (stdout) needs --format: csv, tsv, json, jsonl or parquet")
    with tempfile.TemporaryDirectory(prefix="align-track-export-") as folder:
        path = Path(folder) / f"rows.{args.format}"
        count = export(_data_dir(args), args.table, _filters(args), path, args.format)
        sys.stdout.flush()
        with path.open("rb") as rows:
            shutil.copyfileobj(rows, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    print(f"wrote {count} {args.table} rows to stdout ({args.format})", file=sys.stderr)
    return 0, None
