"""The comparison file as a fast copy of the scenes table, used only while it is current.

`<data dir>/analysis/scene_comparison.parquet` (the `scene_comparison` asset) holds every
scenes row, sorted by scenario. A query on the partition files opens each of them; on this one
file DuckDB skips the row groups it does not need. The file records the fingerprint of the
tables it was built from; while the tables still have that fingerprint, reading the file gives
exactly the rows the tables would.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from align_track_pipeline.core.schema import TABLES
from align_track_pipeline.core.tables.store import ParquetStore

COMPARISON_FILE = Path("analysis") / "scene_comparison.parquet"  # under the data dir
FINGERPRINT_KEY = "align_track.tables_fingerprint"


# Table -> its partition files' (name, inode, size, mtime in ns), sorted by name.
Listing = dict[str, list[tuple[str, int, int, int]]]


def table_listing(data_dir: Path) -> Listing:
    """The tables as they are now: every partition file's name, inode, size and mtime (a
    rewrite replaces the file: a new inode and mtime). Stat calls only, no file is read."""
    store = ParquetStore(data_dir)
    listing: Listing = {}
    for table in TABLES:
        folder = store.table_dir(table)
        with os.scandir(folder) if folder.is_dir() else nullcontext([]) as entries:
            listing[table] = sorted((e.name, e.inode(), e.stat().st_size, e.stat().st_mtime_ns)
                                    for e in entries if e.name.endswith(".parquet"))
    return listing


def fingerprint_of(listing: Listing) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for table in TABLES:
        digest.update(repr((table, [tuple(f) for f in listing.get(table, [])])).encode())
    return digest.hexdigest()


def tables_fingerprint(data_dir: Path) -> str:
    return fingerprint_of(table_listing(data_dir))


def comparison_is_current(data_dir: Path) -> bool:
    """Whether the comparison file was built from the tables as they are now, with every
    scenes column (a file of an older layout, or one that cannot be read, never stands in
    for the table)."""
    comparison = Path(data_dir) / COMPARISON_FILE
    try:
        schema = pq.read_schema(comparison)
    except (OSError, pa.ArrowException):  # none yet, or unreadable: the tables answer
        return False
    recorded = (schema.metadata or {}).get(FINGERPRINT_KEY.encode())
    return ({"kdma_values", *TABLES["scenes"].names} <= set(schema.names)
            and recorded == tables_fingerprint(Path(data_dir)).encode())
