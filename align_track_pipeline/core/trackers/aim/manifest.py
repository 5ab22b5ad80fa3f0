"""The scene key -> Aim run hash manifest (`<repo>/align-track-manifest.sqlite`).

Aim 3.29 cannot create a run under a chosen hash, so this small SQLite file remembers which run
holds each scene (`<partition>::<scene index>`), with its content hash and whether it was
closed. It also holds the repo's other runs (archived or not ours: not a sign of a lost row),
the runs still to be indexed (a kill between writing and indexing leaves them there), and a
*generation*: a random id made when the manifest is (re)built. The Aim tracker's data versions
carry it, so a manifest deleted or rebuilt makes every partition stale once (`generation`,
one stat when nothing changed). No Aim import: readers (links in `align-track search`) use it
without loading Aim.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from align_track_pipeline.core.trackers.sqlite_value import NONE, read_value

CREATING = "creating:"  # placeholder run hash: "creating:<unix time>"
MANIFEST = "align-track-manifest.sqlite"  # beside the repo's .aim folder


def manifest_path(repo_path: Path) -> Path:
    """The manifest lives with the repo it describes: every writer of the repo, whatever its
    data dir or host, sees the same one."""
    return Path(repo_path) / MANIFEST


class Manifest:
    """scene key -> (run hash, content hash, complete)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS runs (partition TEXT NOT NULL, key TEXT PRIMARY KEY,"
            " run_hash TEXT NOT NULL, content_hash TEXT NOT NULL, complete INTEGER NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS runs_partition ON runs (partition)")
        self._db.execute("CREATE TABLE IF NOT EXISTS others (run_hash TEXT PRIMARY KEY)")
        self._db.execute("CREATE TABLE IF NOT EXISTS unindexed (run_hash TEXT PRIMARY KEY)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', ?)",
                             (secrets.token_hex(8),))

    def rows(self, partition: str) -> dict[str, tuple[str, str, bool]]:
        cur = self._db.execute(
            "SELECT key, run_hash, content_hash, complete FROM runs WHERE partition = ?",
            (partition,))
        return {k: (h, c, bool(done)) for k, h, c, done in cur}

    def pending(self, partition: str, key: str, run_hash: str, content_hash: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, 0)",
                             (partition, key, run_hash, content_hash))

    def placeholder(self, partition: str, key: str, content_hash: str) -> None:
        self.pending(partition, key, f"{CREATING}{time.time()}", content_hash)

    def all_hashes(self) -> set[str]:
        """Every run the manifest knows of: the scenes' and the others."""
        return ({h for (h,) in self._db.execute("SELECT run_hash FROM runs")}
                | self.others())

    def complete_hashes(self) -> set[str]:
        return {h for (h,) in self._db.execute("SELECT run_hash FROM runs WHERE complete = 1")}

    def others(self) -> set[str]:
        return {h for (h,) in self._db.execute("SELECT run_hash FROM others")}

    def add_others(self, run_hashes: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO others VALUES (?)",
                                 [(h,) for h in run_hashes])

    def complete(self, keys: list[str]) -> None:
        """Mark the scenes' runs complete, and due for the index, in one transaction."""
        with self._db:
            self._db.executemany("UPDATE runs SET complete = 1 WHERE key = ?",
                                 [(k,) for k in keys])
            self._db.executemany(
                "INSERT OR IGNORE INTO unindexed SELECT run_hash FROM runs WHERE key = ?",
                [(k,) for k in keys])

    def unindexed(self) -> list[str]:
        return [h for (h,) in self._db.execute("SELECT run_hash FROM unindexed")]

    def to_index(self, run_hashes: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO unindexed VALUES (?)",
                                 [(h,) for h in run_hashes])

    def unindexed_orphans(self) -> list[str]:
        """Runs to index that no scene row holds (archived, or since replaced): a kill
        left them; no partition's upsert will come back to them."""
        return [h for (h,) in self._db.execute(
            "SELECT run_hash FROM unindexed WHERE run_hash NOT IN (SELECT run_hash FROM runs)")]

    def indexed(self, run_hashes: Iterable[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM unindexed WHERE run_hash = ?",
                                 [(h,) for h in run_hashes])

    def replace(self, rows: Iterable[tuple[str, str, str, str, bool]],
                others: Iterable[str]) -> None:
        """Make the manifest hold exactly these scene rows (partition, key, run hash, content
        hash, complete) and other runs, under a new generation: one transaction."""
        with self._db:
            self._db.execute("DELETE FROM runs")
            self._db.execute("DELETE FROM others")
            self._db.executemany("INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?)",
                                 [(p, k, h, c, int(done)) for p, k, h, c, done in rows])
            self._db.executemany("INSERT OR IGNORE INTO others VALUES (?)",
                                 [(h,) for h in others])
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)",
                             (secrets.token_hex(8),))

    def forget(self, keys: list[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM runs WHERE key = ?", [(k,) for k in keys])

    def close(self) -> None:
        self._db.close()


def complete_run_hashes(path: Path, keys: list[str]) -> dict[str, str]:
    """Scene key -> run hash of the complete runs among `keys`, opened read-only (a reader
    never creates the manifest); one query per 500 keys."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=60)
    try:
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            out |= dict(db.execute(
                "SELECT key, run_hash FROM runs WHERE complete = 1 AND key IN "
                f"({', '.join('?' * len(chunk))})", chunk))
        return out
    finally:
        db.close()


NO_MANIFEST = NONE


def generation(path: Path) -> str:
    """The manifest's generation, `NO_MANIFEST` when there is none (or it predates
    generations). Two stats when nothing changed (`sqlite_value`)."""
    return read_value(path, "SELECT value FROM meta WHERE name = 'generation'")
