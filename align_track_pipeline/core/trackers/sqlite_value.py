"""One value read from a SQLite file that other processes write, cached on the file's stats.

What tells which store instance a tracker's runs are in (the Aim manifest's generation, the
MLflow experiment's creation) is asked once per partition when states are computed: read
once, then two stats (the file and its WAL) while neither changed. Only stats: a process
must never open and close a SQLite file outside SQLite while it holds a connection to it
(closing any descriptor of a file drops the process's POSIX locks on it, so another
process's last connection deletes the WAL under it: "disk I/O error").
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

NONE = "none"  # no file, no table, or no row: nothing vouches for the runs
_cache: dict[tuple[Path, str, tuple], tuple[tuple, str]] = {}  # (file, query) -> (stats, value)


def read_value(path: Path, query: str, params: tuple = ()) -> str:
    """The first column of the query's first row as text, opened read-only; `NONE` when the
    file, its table (or column) or the row is missing. Any other error is raised."""
    stats = tuple(_stat(Path(f"{path}{suffix}")) for suffix in ("", "-wal"))
    if stats[0] is None:
        return NONE
    key = (path, query, params)
    cached = _cache.get(key)
    if cached is not None and cached[0] == stats:
        return cached[1]
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        found = db.execute(query, params).fetchone()
    except sqlite3.OperationalError as error:
        if not str(error).startswith(("no such table", "no such column")):
            raise  # unreadable (I/O, permissions): not taken for "no runs", not cached
        found = None  # nothing written yet, or a schema this query does not know
    finally:
        db.close()
    value = NONE if found is None or found[0] is None else str(found[0])
    _cache[key] = (stats, value)
    return value


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size
