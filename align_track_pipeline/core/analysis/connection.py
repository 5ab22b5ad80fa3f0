"""The two tables as DuckDB views on one locked connection.

DuckDB reads the Parquet files where they are: it scans only the columns a query names, skips
row groups by their statistics and runs on every core, with no copy of the data and no server.
User SQL (`--where`) runs on this connection only, and only after it is locked: file access is
limited to the two table directories (and the one output file of an export), extensions are
neither installed nor loaded, and the configuration cannot be changed back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from align_track_pipeline.core.analysis.columns import columns_of
from align_track_pipeline.core.analysis.snapshot import COMPARISON_FILE, comparison_is_current
from align_track_pipeline.core.schema import TABLES
from align_track_pipeline.core.tables.health import (
    files_lacking,
    unreadable_files,
    vanished_files,
)
from align_track_pipeline.core.tables.store import ParquetStore

MEMORY_LIMIT = "4GB"
T = TypeVar("T")


class AnalysisError(Exception):
    """A request the tables cannot answer as asked; the message says what is valid."""


class QueryError(AnalysisError):
    """DuckDB failed on a query with user SQL: the SQL, or a broken table file."""


def broken_files_message(data_dir: Path, with_older: bool = True) -> str | None:
    """What is wrong with the tables' files, naming each unreadable one, each that is not a
    table file and (`with_older`) those of an earlier version, and how to repair it; None
    when there is none. Reads every footer: for error paths only."""
    store = ParquetStore(Path(data_dir).resolve())
    return _described(store, _misfits(store), with_older)


def _described(store: ParquetStore, misfits: dict[str, tuple[list[Path], list[Path]]],
               with_older: bool) -> str | None:
    said = []
    if broken := unreadable_files(store.table_dir(t) for t in TABLES):
        said.append("unreadable table files: " + "; ".join(str(b) for b in broken)
                    + ". Run `align-track ingest` to rewrite them")
    for table, (older, foreign) in misfits.items():
        if foreign:
            said.append(f"not {table} table files (not written by align-track for a "
                        f"partition, or lacking its columns): " + "; ".join(map(str, foreign))
                        + f". Move them out of {store.table_dir(table)}: every file there is "
                        "read as a partition")
        if with_older and older:
            said.append(f"{len(older)} {table} table files were written by an earlier "
                        f"align-track, without its newer columns (e.g. {older[0]}). Run "
                        "`align-track ingest` to rewrite them")
    return ". ".join(said) or None


@contextmanager
def files_named_on_failure(data_dir: Path) -> Iterator[None]:
    """A DuckDB failure while reading the tables is raised as an AnalysisError naming the
    broken or foreign files and the repair, when there are such files (else as it is)."""
    try:
        yield
        return
    except duckdb.Error:
        broken = broken_files_message(data_dir)
        if broken is None:
            raise
    raise AnalysisError(broken)  # outside the handler, unchained: this is the cause to show


def vanished_files_message(data_dir: Path, cache_path: Path) -> str | None:
    """Table files that ingest wrote and that were deleted behind its back (their folders
    are still in the tree): the answer leaves out their rows. None when none is gone."""
    store = ParquetStore(Path(data_dir).resolve())
    gone = vanished_files(cache_path, lambda key: [store.path(t, key) for t in TABLES])
    if not gone:
        return None
    shown = "; ".join(str(p) for p in gone[:5]) + (f" and {len(gone) - 5} more"
                                                   if len(gone) > 5 else "")
    return (f"{len(gone)} table files that ingest wrote are missing ({shown}): the answer "
            "leaves out their rows. Run `align-track ingest` to rewrite them")


# Set while the tables are read with the files of an earlier version among them
# (`tolerating_older_files`): DuckDB then matches columns by name, a missing one read as null.
_OLDER_FILES: ContextVar[bool] = ContextVar("older_files", default=False)


def union_option() -> str:
    """`read_parquet`'s options for the table files: by name while older files are read
    (every footer is read first: seconds at thousands of files, so only then)."""
    return ", union_by_name = true" if _OLDER_FILES.get() else ""


def tolerating_older_files(data_dir: Path, call: Callable[[], T],
                           warn: Callable[[str], None]) -> T:
    """`call()`; when DuckDB fails on table files that only lack columns a newer align-track
    added (their partition's folder is unreadable, or fails to parse, so no ingest rewrote
    them), once more with those columns read as null, saying so through `warn`."""
    try:
        return call()
    except duckdb.Error:
        store = ParquetStore(Path(data_dir).resolve())
        misfits = _misfits(store)
        older = [path for mine, _ in misfits.values() for path in mine]
        if not older or _described(store, misfits, with_older=False) is not None:
            raise
    warn(f"{len(older)} table files were written by an earlier align-track (e.g. "
         f"{older[0]}): their newer columns read as empty until `align-track ingest` "
         "rewrites them")
    token = _OLDER_FILES.set(True)
    try:
        return call()
    finally:
        _OLDER_FILES.reset(token)


def _misfits(store: ParquetStore) -> dict[str, tuple[list[Path], list[Path]]]:
    """Table -> its files that lack some of its columns: those of an earlier version (named
    as the store names the partition they hold) and the others (foreign). A footer read per
    file: for error paths only."""
    found = {}
    for table in TABLES:
        older, foreign = [], []
        for path in files_lacking(store.table_dir(table), columns_of(table)):
            key = _partition_of(path)
            mine = key is not None and store.path(table, key) == path
            (older if mine else foreign).append(path)
        found[table] = (older, foreign)
    return found


def _partition_of(path: Path) -> str | None:
    try:
        column = pq.ParquetFile(path).read_row_group(0, columns=["partition_key"]).column(0)
    except (OSError, ValueError, KeyError, IndexError, pa.ArrowException):
        return None
    return column[0].as_py() if len(column) else None


def sql_literal(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def table_files(data_dir: Path, table: str) -> str:
    """The glob of a table's partition files (the layout `ParquetStore` writes)."""
    return str(ParquetStore(data_dir).table_dir(table) / "*.parquet")


def open_tables(data_dir: Path, views: Sequence[str] = tuple(TABLES), files: Sequence[Path] = (),
                from_comparison: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection with a view per table in `views` (each costs a listing of its partition
    files), locked for user SQL; `files` are the only other files it may read or write (an
    export's output). The `scenes` view reads the comparison file instead of the partition
    files while that file is current (`snapshot`), unless `from_comparison` is false.
    Raises AnalysisError when there are no tables."""
    data_dir = Path(data_dir).resolve()  # the views and the allowed directories agree
    store = ParquetStore(data_dir)
    missing = [t for t in TABLES if not any(store.table_dir(t).glob("*.parquet"))]
    if missing:
        raise AnalysisError(f"no {' or '.join(missing)} table in {store.root} yet: run "
                            "`align-track ingest` first (or pass the --data-dir it wrote)")
    con = duckdb.connect(":memory:")
    _no_progress_bar(con)
    # Bounded memory: beyond it, the comparison's sort of every scene spills to disk, under
    # the analysis folder it is written to (the commands' small sorts never spill).
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    spill = data_dir / COMPARISON_FILE.parent / ".duckdb-tmp"
    con.execute(f"SET temp_directory = {sql_literal(str(spill))}")
    comparison = data_dir / COMPARISON_FILE
    snapshot = from_comparison and "scenes" in views and comparison_is_current(data_dir)
    for table in views:
        # Every file is written with the one schema (ParquetStore casts), so the first file's
        # schema is the table's: `union_by_name` would read every footer first (seconds at
        # thousands of partitions).
        source = str(comparison) if snapshot and table == "scenes" else table_files(
            data_dir, table)
        columns = ", ".join(f'"{c}"' for c in columns_of(table))
        options = "" if source == str(comparison) else union_option()
        con.execute(f"CREATE VIEW {table} AS SELECT {columns} FROM "
                    f"read_parquet({sql_literal(source)}{options})")
    _lock(con, [store.table_dir(t) for t in TABLES], [*files, *([comparison] * snapshot)])
    return con


def _no_progress_bar(con: duckdb.DuckDBPyConnection) -> None:
    """No progress bar on a terminal or in run logs. In a Jupyter kernel without ipywidgets
    DuckDB refuses any change to the setting, and has the bar off already."""
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.InvalidInputException:
        if con.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0]:
            raise


def map_keys(con: duckdb.DuckDBPyConnection, table: str, column: str) -> list[str]:
    """The keys a map column (scores, KDMA values) holds anywhere in the table."""
    return sorted(k for (k,) in con.sql(
        f'SELECT DISTINCT unnest(map_keys("{column}")) FROM {table}').fetchall())


def _lock(con: duckdb.DuckDBPyConnection, dirs: list[Path], files: Sequence[Path]) -> None:
    con.execute(f"SET allowed_directories = [{', '.join(sql_literal(f'{d}/') for d in dirs)}]")
    if files:
        paths = ", ".join(sql_literal(str(Path(f).resolve())) for f in files)
        con.execute(f"SET allowed_paths = [{paths}]")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
