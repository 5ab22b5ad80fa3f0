"""Whether the partition files a table should hold are there and readable.

Dagster records that a partition was written, not that its file is still intact: a file
truncated or deleted behind the pipeline's back would look fresh for ever. Checking is kept
cheap enough for every sensor tick: each expected file is stat'ed, and its Parquet footer is
read only when its stat data differs from the last time the file was known good (written here,
or checked). Those stat data live beside the fingerprints, in the same per-host SQLite file;
losing it costs one footer read per file.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@dataclass(frozen=True)
class BrokenFile:
    path: Path
    problem: str  # "missing", or "unreadable (<reason>)"
    signature: str  # the file's stat data now ("" when missing): a new break, a new value

    def __str__(self) -> str:
        return f"{self.path} is {self.problem}"


def described(files: Iterable[BrokenFile]) -> str:
    """A partition's broken files in one line, as every message about them says it."""
    return "; ".join(map(str, files))


def file_signature(path: Path) -> str | None:
    """Size, mtime and inode: a rewrite (a rename into place) or a truncation changes it."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # there, but cannot be looked at: the footer read says why
        return f"unreadable:{exc.errno}"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def footer_error(path: Path) -> str | None:
    """Why the file's Parquet footer cannot be read, or None when it can."""
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def unreadable_files(folders: Iterable[Path]) -> list[BrokenFile]:
    """Every partition file under `folders` whose footer cannot be read (a footer read per
    file: for error paths, not for every query)."""
    found = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*.parquet")):
            error = None if path.name.startswith(".") else footer_error(path)
            if error is not None:
                found.append(BrokenFile(path, f"unreadable ({error})", file_signature(path) or ""))
    return found


def files_lacking(folder: Path, columns: Iterable[str]) -> list[Path]:
    """The files in a table's folder whose footer reads but which lack one of `columns`: put
    there by hand (a notebook's output), or written before those columns existed. A footer
    read per file: for error paths only."""
    wanted = set(columns)
    found = []
    for path in sorted(Path(folder).glob("*.parquet")):
        if path.name.startswith("."):
            continue
        try:
            names = pq.read_schema(path).names
        except (OSError, pa.ArrowException):  # unreadable: `unreadable_files` names it
            continue
        if not wanted <= set(names):
            found.append(path)
    return found


SAVE_EVERY = 1000  # footers verified between two saves


class VerifiedFiles:
    """The stat data of each partition file when it was last known good, in a table of the
    fingerprint cache's SQLite file (keyed by the file's path)."""

    def __init__(self, db_path: Path):
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(db_path, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS parquet_files"
                             " (path TEXT PRIMARY KEY, stat TEXT NOT NULL)")
        except BaseException:  # no object to close it through: not left open
            self._db.close()
            raise

    def record(self, paths: Iterable[Path]) -> None:
        """Remember these files, just written, as good."""
        rows = [(str(p), s) for p in paths if (s := file_signature(p)) is not None]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO parquet_files VALUES (?, ?)", rows)

    def broken(self, paths: Iterable[Path]) -> list[BrokenFile]:
        """The files that are missing or whose footer cannot be read. A footer is read only
        when the file's stat data changed since it was last known good; a good one is then
        remembered, so the next pass costs a stat call again."""
        known = dict(self._db.execute("SELECT path, stat FROM parquet_files"))
        found, good = [], []
        for path in paths:
            signature = file_signature(path)
            if signature is None:
                found.append(BrokenFile(path, "missing", ""))
            elif known.get(str(path)) != signature:
                error = footer_error(path)
                if error is None and not signature.startswith("unreadable:"):
                    good.append((str(path), signature))
                    if len(good) >= SAVE_EVERY:  # a first pass over a large store that is
                        self._save(good)  # cut short keeps what it verified
                        good = []
                else:
                    found.append(BrokenFile(path, f"unreadable ({error})", signature))
        self._save(good)
        return found

    def forget(self, paths: Iterable[Path]) -> None:
        """These files were deleted or archived on purpose (their folder left the tree)."""
        with self._db:
            self._db.executemany("DELETE FROM parquet_files WHERE path = ?",
                                 [(str(p),) for p in paths])

    def _save(self, good: list[tuple[str, str]]) -> None:
        if good:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO parquet_files VALUES (?, ?)",
                                     good)

    def close(self) -> None:
        self._db.close()


def vanished_files(cache_path: Path, paths_of: Callable[[str], Iterable[Path]]) -> list[Path]:
    """The table files (`paths_of(partition key)`) that were written and known good, whose
    partition is still among the folders last seen in the tree, and that are gone
    now: their rows are missing from every answer until `ingest` rewrites them. Reads the
    per-host cache read-only; without one nothing is known and nothing is reported."""
    if not cache_path.is_file():
        return []
    try:
        db = sqlite3.connect(f"file:{cache_path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    try:
        current = {key for (key,) in db.execute("SELECT key FROM fingerprints")}
        written = {path for (path,) in db.execute("SELECT path FROM parquet_files")}
    except sqlite3.Error:  # a cache from before these tables: nothing to compare with
        return []
    finally:
        db.close()
    return sorted(path for key in current for path in paths_of(key)
                  if str(path) in written and _gone(path))


def _gone(path: Path) -> bool:
    """No file at `path`; one that cannot be looked at (a folder without permission) is not
    taken as gone: reading it fails, and that error names it."""
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False
