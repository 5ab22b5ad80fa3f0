"""`scene_comparison`: every scenario's decisions side by side, as one Parquet file that
notebooks, spreadsheets and the UI read without touching the partitioned tables; `dashboard`:
the research numbers as one self-contained page."""

# No `from __future__ import annotations`: Dagster reads the `context` annotation as a type.
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.analysis.compare import write_comparison
from align_track_pipeline.core.analysis.connection import (
    files_named_on_failure,
    tolerating_older_files,
)
from align_track_pipeline.core.analysis.dashboard import write_dashboard
from align_track_pipeline.core.analysis.incremental import listing_path
from align_track_pipeline.core.analysis.render import markdown_table, side_by_side
from align_track_pipeline.core.analysis.snapshot import COMPARISON_FILE, table_listing
from align_track_pipeline.defs.automation import WHOLE_TABLE_CONDITION
from align_track_pipeline.defs.resources import DataStore
from align_track_pipeline.defs.tables import TABLE_ASSETS

PREVIEW_RUNS = 6  # columns of the side-by-side preview
DASHBOARD_FILE = Path("analysis") / "dashboard.html"  # under the data dir
# `scene_comparison`'s metadata: the partition files read to update it; absent when rebuilt.
CHANGED_FILES = "changed_files"
DELETED = "deleted"  # the analysis assets' metadata when no table is left: why the files went


@dg.asset(
    deps=list(TABLE_ASSETS),
    kinds={"parquet", "duckdb"},
    group_name="analysis",
    automation_condition=WHOLE_TABLE_CONDITION,
    description="One row per scene of each run directory and alignment target, with the "
    "decision, justification, KDMA values, timing and scores, sorted by scenario and scene: "
    "what `align-track compare` shows, for every scenario at once.",
)
def scene_comparison(context: dg.AssetExecutionContext, store: DataStore
                     ) -> dg.MaterializeResult:
    """Updated from its previous version and the partitions that changed since, or rebuilt
    whole from the tables when that version cannot be trusted (DuckDB: a streaming join and
    sort). With no table left (every folder removed), the file is deleted."""
    comparison = Path(store.data_dir) / COMPARISON_FILE
    if _no_tables(store):
        return _deleted(comparison, listing_path(comparison))
    data = Path(store.data_dir)
    with files_named_on_failure(data):
        result = tolerating_older_files(
            data, lambda: write_comparison(data, data / COMPARISON_FILE), context.log.warning)
    built = ("rebuilt from every partition file" if result.changed_files is None else
             f"updated: {result.changed_files} changed partition files read")
    changed = ({} if result.changed_files is None
               else {CHANGED_FILES: dg.MetadataValue.int(result.changed_files)})
    return dg.MaterializeResult(metadata=changed | {
        "dagster/row_count": result.rows,
        "built": dg.MetadataValue.text(built),
        "path": dg.MetadataValue.path(str(result.path)),
        "runs": dg.MetadataValue.int(result.runs),
        "scenarios": dg.MetadataValue.int(result.scenarios),
        "preview": dg.MetadataValue.md(_preview(result.preview)),
    })


def _preview(rows: list[dict]) -> str:
    """The scene that most runs share, its first runs side by side."""
    if not rows:
        return "No scenes yet."
    shown = rows[:PREVIEW_RUNS]
    title = (f"**{rows[0]['scenario_id']}**, scene {rows[0]['scene_id'] or '(no id)'}: "
             f"{len(rows)} runs, the first {len(shown)} side by side "
             f"(all: `align-track compare '{rows[0]['scenario_id']}'`)")
    return f"{title}\n\n{markdown_table(*side_by_side(shown), width=80)}"


@dg.asset(
    # After the comparison file in the same run: its scenes query reads that one current file
    # instead of every scenes partition file.
    deps=[*TABLE_ASSETS, scene_comparison],
    kinds={"html", "duckdb"},
    group_name="analysis",
    automation_condition=WHOLE_TABLE_CONDITION,
    description="One self-contained page (no script, no network): scores by ADM and target, "
    "decision time by ADM and LLM, and per scenario the share of scenes where all ADMs chose "
    "the same action; what `align-track dashboard` writes.",
)
def dashboard(context: dg.AssetExecutionContext, store: DataStore) -> dg.MaterializeResult:
    """Rebuilt whole from the tables after any partition changed, like `scene_comparison`;
    deleted when no table is left."""
    if _no_tables(store):
        return _deleted(Path(store.data_dir) / DASHBOARD_FILE)
    data = Path(store.data_dir)
    with files_named_on_failure(data):
        written = tolerating_older_files(
            data, lambda: write_dashboard(data, data / DASHBOARD_FILE), context.log.warning)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(written.path)),
        "open": dg.MetadataValue.url(written.path.resolve().as_uri()),
        "charts": dg.MetadataValue.int(written.sections),
        "scenarios compared": dg.MetadataValue.int(written.scenarios),
    })


def _no_tables(store: DataStore) -> bool:
    """No partition file in either table: every folder was removed (or none ingested)."""
    return not any(table_listing(Path(store.data_dir)).values())


def _deleted(*files: Path) -> dg.MaterializeResult:
    """Nothing to show: the files of earlier tables are deleted, not left to show them."""
    for path in files:
        path.unlink(missing_ok=True)
    return dg.MaterializeResult(metadata={
        DELETED: dg.MetadataValue.text("no table files: every folder was removed, so the "
                                       "file was deleted")})
