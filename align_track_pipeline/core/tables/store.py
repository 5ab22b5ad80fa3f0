"""One Parquet file per (table, partition), written atomically.

`<data dir>/parquet/<table>/<partition file>.parquet`, so that
`pyarrow.dataset.dataset("<data dir>/parquet/<table>")` reads the whole table. Temporary files
start with a dot, which pyarrow's dataset discovery ignores, then are renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from align_track_pipeline.core.schema import TABLES
from align_track_pipeline.core.tables.row_counts import cache_path, counted

_MAX_NAME = 180  # file systems allow 255 bytes; leave room for the hash and suffix


class ParquetStore:
    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "parquet"

    def table_dir(self, table: str) -> Path:
        return self.root / table

    def path(self, table: str, partition_key: str) -> Path:
        name = quote(partition_key, safe="")
        if len(name) > _MAX_NAME or name.startswith(("_", ".")):
            digest = hashlib.blake2b(partition_key.encode(), digest_size=8).hexdigest()
            name = f"p{name[:_MAX_NAME]}-{digest}"
        return self.table_dir(table) / f"{name}.parquet"

    def write(self, table: str, partition_key: str, data: pa.Table) -> Path:
        """Write (replace) one partition's file; readers never see a half-written file."""
        data = data.cast(TABLES[table])
        target = self.path(table, partition_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{uuid.uuid4().hex}.tmp"
        try:
            pq.write_table(data, tmp, compression="zstd")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def read(self, table: str, partition_key: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(table, partition_key), columns=columns)

    def row_counts(self, table: str) -> dict[str, int]:
        """File name -> rows of each partition file of the table, from the Parquet footers
        (no data is read) of the files written since the last count, the others' from that
        count (`row_counts`). A file that is unreadable (or gone meanwhile) counts no rows:
        it is about to be rewritten."""
        folder = self.table_dir(table)
        if not folder.is_dir():
            return {}
        return counted(folder, cache_path(self.root, table), _rows)

    def stored_keys(self) -> set[str]:
        """The partitions the tables hold, read from each experiments file (a column of its
        first row group): what a data dir whose Dagster instance is gone (deleted to reclaim
        space, say) still holds, so a folder removed since is still seen to be gone."""
        keys = set()
        for path in self.table_dir("experiments").glob("*.parquet"):
            try:
                column = pq.ParquetFile(path).read_row_group(0, columns=["partition_key"])
            except (OSError, ValueError, KeyError):  # unreadable: repaired when rewritten
                continue
            keys.update(k for k in column.column(0).to_pylist() if k)
        return keys

    def delete(self, table: str, partition_key: str) -> bool:
        path = self.path(table, partition_key)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def archive(self, table: str, partition_key: str, batch: str) -> bool:
        """Move the partition's file to `<data dir>/archive/<batch>/<table>/`, out of the
        table's dataset (readers no longer see it) but kept; returns whether it existed."""
        path = self.path(table, partition_key)
        if not path.exists():
            return False
        target = self.root.parent / "archive" / batch / table / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return True


def _rows(path: Path) -> int | None:
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException):
        return None
