"""The two tables as DuckDB views on one locked connection.

DuckDB reads the Parquet files where they are: it scans only the columns a query names, skips
row groups by their statistics and runs on every core, with no copy of the data and no server.
User SQL (`--where`) runs on this connection only, and only after it is locked: file access is
limited to the two table directories (and the one output file of an export), extensions are
neither installed nor loaded, and the configuration cannot be changed back.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from align_track_pipeline.core.tables.schema import TABLES
from align_track_pipeline.core.tables.store import ParquetStore


class AnalysisError(Exception):
    """A request the tables cannot answer as asked; the message says what is valid."""


def sql_literal(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def table_files(data_dir: Path, table: str) -> str:
    """The glob of a table's partition files (the layout `ParquetStore` writes)."""
    return str(ParquetStore(data_dir).table_dir(table) / "*.parquet")


def open_tables(data_dir: Path, output: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A connection with the views `experiments` and `scenes`, locked for user SQL; `output`
    is the one file it may write. Raises AnalysisError when there are no tables yet."""
    data_dir = Path(data_dir).resolve()  # the views and the allowed directories agree
    store = ParquetStore(data_dir)
    missing = [t for t in TABLES if not any(store.table_dir(t).glob("*.parquet"))]
    if missing:
        raise AnalysisError(f"no {' or '.join(missing)} table in {store.root} yet: run "
                            "`align-track ingest` first (or pass the --data-dir it wrote)")
    con = duckdb.connect(":memory:")
    for table in TABLES:
        # Every file is written with the one schema (ParquetStore casts), so the first file's
        # schema is the table's: `union_by_name` would read every footer first (seconds at
        # thousands of partitions).
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM "
                    f"read_parquet({sql_literal(table_files(data_dir, table))})")
    _lock(con, [store.table_dir(t) for t in TABLES], output)
    return con


def map_keys(con: duckdb.DuckDBPyConnection, table: str, column: str) -> list[str]:
    """The keys a map column (scores, KDMA values) holds anywhere in the table."""
    return sorted(k for (k,) in con.sql(
        f'SELECT DISTINCT unnest(map_keys("{column}")) FROM {table}').fetchall())


def _lock(con: duckdb.DuckDBPyConnection, readable: list[Path], output: Path | None) -> None:
    dirs = ", ".join(sql_literal(f"{d}/") for d in readable)
    con.execute(f"SET allowed_directories = [{dirs}]")
    if output is not None:
        con.execute(f"SET allowed_paths = [{sql_literal(str(output.resolve()))}]")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
