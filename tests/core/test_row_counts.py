"""A table's rows per partition file: each file's footer read once, then taken from the count
kept in the data dir while the file is the one counted; any rewrite is read again."""

import os

import pyarrow as pa
import pyarrow.parquet as pq

from align_track_pipeline.core.tables.row_counts import cache_path
from align_track_pipeline.core.tables.store import ParquetStore


def _write(store: ParquetStore, key: str, rows: int):
    """A partition file of `rows` rows, put in place as the store does (a new file)."""
    path = store.path("experiments", key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{key}.tmp")
    pq.write_table(pa.table({"n": list(range(rows))}), tmp)
    os.replace(tmp, path)
    return path


def _same_stat_garbage(path) -> None:
    """Overwrite the file in place with bytes of the same size and restore its mtime: a
    change no stat call sees (what only a kept count would not notice)."""
    stat = path.stat()
    path.write_bytes(b"x" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_counts_are_kept_while_each_file_is_the_one_counted(tmp_path):
    store = ParquetStore(tmp_path)
    a = _write(store, "a", 3)
    _write(store, "b", 5)
    assert store.row_counts("experiments") == {"a.parquet": 3, "b.parquet": 5}
    assert cache_path(store.root, "experiments").exists()

    _same_stat_garbage(a)  # its footer is unreadable now, its stat data unchanged
    assert store.row_counts("experiments") == {"a.parquet": 3, "b.parquet": 5}

    _write(store, "a", 7)  # a rewrite: a new file, read again
    _write(store, "c", 1)
    store.delete("experiments", "b")
    assert store.row_counts("experiments") == {"a.parquet": 7, "c.parquet": 1}
    assert {n: pq.read_metadata(store.table_dir("experiments") / n).num_rows
            for n in ("a.parquet", "c.parquet")} == {"a.parquet": 7, "c.parquet": 1}


def test_an_unreadable_file_counts_nothing_until_rewritten_and_a_bad_cache_is_ignored(tmp_path):
    store = ParquetStore(tmp_path)
    _write(store, "a", 3)
    broken = store.table_dir("experiments") / "b.parquet"
    broken.write_bytes(b"not parquet")
    cache_path(store.root, "experiments").parent.mkdir(parents=True, exist_ok=True)
    cache_path(store.root, "experiments").write_text("{not json")

    assert store.row_counts("experiments") == {"a.parquet": 3, "b.parquet": 0}
    _write(store, "b", 2)
    assert store.row_counts("experiments") == {"a.parquet": 3, "b.parquet": 2}
