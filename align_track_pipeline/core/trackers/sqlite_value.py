"""One value read from a SQLite file that other processes write, cached on the file's stats.

What tells which store instance a tracker's runs are in (the Aim manifest's generation, the
MLflow experiment's creation) is asked once per partition when states are computed: read
once, then a stamp of the file and its WAL while neither changed. The stamp is each file's
inode, modification time and size, and its header, which SQLite changes with every commit
(the database's change counter; the WAL's salts, new each time the log starts over): a
commit within the clock's granularity that keeps the size still changes it.
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
    stats = tuple(_stamp(Path(f"{path}{suffix}")) for suffix in ("", "-wal"))
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


def _stamp(path: Path) -> tuple[int, int, int, bytes] | None:
    """Inode, modification time, size and the first `_HEADER` bytes; None: no such file."""
    try:
        with open(path, "rb") as file:
            st = os.fstat(file.fileno())
            return st.st_ino, st.st_mtime_ns, st.st_size, file.read(_HEADER)
    except FileNotFoundError:
        return None


_HEADER = 100  # a database's header (change counter at 24) holds a WAL's (salts at 16)
