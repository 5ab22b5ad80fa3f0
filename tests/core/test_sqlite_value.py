"""`read_value`: one value from a SQLite file other processes write, cached on its stats."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from align_track_pipeline.core.trackers.sqlite_value import NONE, read_value

QUERY = "SELECT value FROM meta WHERE name = 'generation'"


def _write(db: sqlite3.Connection, value: str) -> None:
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (value,))


def test_reading_keeps_this_processs_hold_on_a_wal_database(tmp_path):
    """This process writes the store (its connection holds a POSIX lock on the file) and
    reads a value from it; then another process's only connection closes. That close must
    not take itself for the last one and delete the WAL under this process's writer: it
    did when the read opened and closed the file outside SQLite (a header read), which
    drops every POSIX lock the process holds on it ("disk I/O error" on the next write)."""
    path = tmp_path / "store.sqlite"
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=WAL")
    _write(writer, "aaaa")
    assert read_value(path, QUERY) == "aaaa"
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; "
                    "sqlite3.connect(sys.argv[1]).execute('SELECT * FROM meta').fetchall()",
                    str(path)], check=True)
    assert (tmp_path / "store.sqlite-wal").exists() and (tmp_path / "store.sqlite-shm").exists()
    _write(writer, "bbbbb")
    assert read_value(path, QUERY) == "bbbbb"
    writer.close()


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
