"""Parse one run directory and write its Parquet partitions: the unit of work of an ingest.

Runs in worker processes, so it takes and returns small picklable values: the summary the
Dagster shell turns into events, never the tables themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from align_track_pipeline.core.schema import PREVIEW_COLUMNS, TABLES
from align_track_pipeline.core.source.discovery import RunDir, rel_path_of
from align_track_pipeline.core.source.files import ParseError
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.tables.checks import CheckOutcome, row_contract
from align_track_pipeline.core.tables.numbers import research_numbers
from align_track_pipeline.core.tables.store import ParquetStore

PREVIEW_ROWS = 5


@dataclass(frozen=True)
class PartitionJob:
    key: str
    root: str
    data_dir: str
    source_version: str
    tables: tuple[str, ...] = ("experiments", "scenes")


@dataclass(frozen=True)
class TableWrite:
    table: str
    path: str
    rows: int
    preview: list[dict]
    check: CheckOutcome


@dataclass(frozen=True)
class PartitionWrite:
    key: str
    source_version: str
    scenes: int = 0
    tables: list[TableWrite] = field(default_factory=list)
    error: str | None = None
    numbers: dict[str, float] = field(default_factory=dict)  # `core.tables.numbers`


def write_partition(job: PartitionJob) -> PartitionWrite:
    """Parse and write one partition; a bad run directory comes back as `error`."""
    rel = rel_path_of(job.key)
    run_dir = RunDir(Path(job.root) / rel, rel)
    try:
        if not run_dir.path.is_dir():
            raise ParseError(run_dir.path, "run directory no longer exists")
        parsed = parse_run_dir(run_dir, Path(job.root), job.source_version)
    except ParseError as exc:
        return PartitionWrite(job.key, job.source_version, error=str(exc))
    store = ParquetStore(Path(job.data_dir))
    writes = []
    for table in job.tables:
        data = getattr(parsed, table)
        path = store.write(table, job.key, data)
        preview = data.slice(0, PREVIEW_ROWS).select(PREVIEW_COLUMNS[table]).to_pylist()
        check = row_contract(table, data, parsed.item_count)
        writes.append(TableWrite(table, str(path), data.num_rows, preview, check))
    numbers = research_numbers(parsed.experiments.cast(TABLES["experiments"]),
                               parsed.scenes.cast(TABLES["scenes"]))
    return PartitionWrite(job.key, job.source_version, parsed.scenes.num_rows, writes,
                          numbers=numbers)
