"""`read_value`: one value from a SQLite file other processes write, cached on its stamp."""

from __future__ import annotations

import os
import sqlite3

import pytest

from align_track_pipeline.core.trackers.sqlite_value import NONE, read_value

QUERY = "SELECT value FROM meta WHERE name = 'generation'"


def _write(db: sqlite3.Connection, value: str) -> None:
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (value,))


@pytest.mark.parametrize("wal", [False, True])
def test_a_commit_that_keeps_the_files_size_and_time_is_still_seen(tmp_path, wal):
    """Same inode, same size, and the modification time put back (a commit within the
    clock's granularity): the header SQLite changes with every commit tells. In WAL mode
    the writer stays open, as another process writing the store would."""
    path = tmp_path / "store.sqlite"
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    _write(db, "aaaa")
    assert read_value(path, QUERY) == "aaaa"
    files = [f for f in (path, tmp_path / "store.sqlite-wal") if f.exists()]
    before = {f: (f.stat().st_ino, f.stat().st_size, f.stat().st_mtime_ns) for f in files}
    _write(db, "bbbb")
    for f, (ino, size, mtime) in before.items():
        if (f.stat().st_ino, f.stat().st_size) == (ino, size):
            os.utime(f, ns=(mtime, mtime))
    assert read_value(path, QUERY) == "bbbb"
    db.close()


def test_missing_file_table_or_row_is_none_and_other_errors_are_raised(tmp_path):
    path = tmp_path / "store.sqlite"
    assert read_value(path, QUERY) == NONE
    sqlite3.connect(path).close()
    assert read_value(path, QUERY) == NONE  # no table yet
    db = sqlite3.connect(path)
    _write(db, "x")
    db.close()
    assert read_value(path, "SELECT value FROM meta WHERE name = 'other'") == NONE
    with pytest.raises(sqlite3.OperationalError, match="syntax"):
        read_value(path, "SELECT FROM")
