"""The scene key -> Aim run hash manifest (`<repo>/align-track-manifest.sqlite`).

Aim 3.29 cannot create a run under a chosen hash, so this small SQLite file remembers which run
holds each scene (`<partition>::<scene index>`), with its content hash and whether it was
closed. No Aim import: readers (links in `align-track search`) use it without loading Aim.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

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
        return {h for (h,) in self._db.execute("SELECT run_hash FROM runs")}

    def complete(self, keys: list[str]) -> None:
        with self._db:
            self._db.executemany("UPDATE runs SET complete = 1 WHERE key = ?",
                                 [(k,) for k in keys])

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
