"""Find run directories in an experiment-data tree, name them, and fingerprint their inputs.

A run directory holds `input_output.json`. Any path with a component containing `OUTDATED`
(any case) is skipped. Directory symlinks are followed only while they stay inside the tree,
and each real directory is visited once, so loops and aliases cannot recurse or duplicate.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

INPUT_OUTPUT = "input_output.json"
# The files whose content defines a partition's version; logs and state dumps are not inputs.
SOURCE_FILES = (
    INPUT_OUTPUT,
    "timing.json",
    "scores.json",
    "meta.json",
    ".hydra/config.yaml",
    ".hydra/hydra.yaml",
    ".hydra/overrides.yaml",
)
TARGETS_DIR = "targets"
ROOT_KEY = "."

# Dagster rejects "..." and control characters in partition keys; commas break its CLI ranges.
_UNSAFE = re.compile(r"%|,|[\x00-\x1f\x7f]|\.{2,}")


@dataclass(frozen=True)
class RunDir:
    """One experiment run directory: its path and its partition key."""

    path: Path
    rel_path: str

    @property
    def key(self) -> str:
        return partition_key(self.rel_path)


def partition_key(rel_path: str) -> str:
    """Encode a relative path as a Dagster-safe partition key (reversible, readable)."""
    if rel_path in ("", "."):
        return ROOT_KEY
    return _UNSAFE.sub(lambda m: "".join(f"%{ord(c):02X}" for c in m.group()), rel_path)


def rel_path_of(key: str) -> str:
    """Inverse of `partition_key`."""
    return "." if key == ROOT_KEY else unquote(key)


def _skipped(name: str) -> bool:
    """Hidden folders (.hydra, .git) hold no run directories; OUTDATED ones are retired."""
    return name.startswith(".") or "outdated" in name.lower()


def find_run_dirs(root: Path) -> list[RunDir]:
    """Every run directory under `root` (root included), sorted by relative path."""
    root = Path(root)
    real_root = root.resolve()
    found = [
        RunDir(path, path.relative_to(root).as_posix() or ".")
        for path in _walk(root, real_root, set())
        if (path / INPUT_OUTPUT).exists() or (path / INPUT_OUTPUT).is_symlink()
    ]
    return sorted(found, key=lambda r: r.rel_path)


def _walk(directory: Path, real_root: Path, seen: set[str]) -> Iterator[Path]:
    real = os.path.realpath(directory)
    if real in seen or not _inside(real, real_root):
        return
    seen.add(real)
    yield directory
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if not _skipped(entry.name) and entry.is_dir(follow_symlinks=True):
            yield from _walk(Path(entry.path), real_root, seen)


def _inside(real: str, real_root: Path) -> bool:
    return real == str(real_root) or real.startswith(str(real_root) + os.sep)


def source_paths(run_dir: Path) -> list[str]:
    """Relative names of the source files present in a run directory."""
    present = [name for name in SOURCE_FILES if (run_dir / name).is_file()]
    targets = run_dir / TARGETS_DIR
    if targets.is_dir():
        present += sorted(f"{TARGETS_DIR}/{p.name}" for p in targets.glob("*.json"))
    return present


def stat_signature(run_dir: Path) -> str:
    """Cheap change detector: names, sizes and mtimes of the source files."""
    parts = []
    for name in source_paths(run_dir):
        st = (run_dir / name).stat()
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return "|".join(parts)


def content_hash(run_dir: Path) -> str:
    """The partition's data version: a hash of the source files' names and bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for name in source_paths(run_dir):
        digest.update(name.encode() + b"\0")
        try:
            digest.update((run_dir / name).read_bytes())
        except OSError as exc:  # unreadable now: a distinct version, parse reports why
            digest.update(f"unreadable:{exc.errno}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


class FingerprintCache:
    """Content hashes keyed by stat signature, kept in a small SQLite file.

    Only directories whose stat signature changed are re-hashed, so a pass over a large
    unchanged tree costs stat calls only, and a touched-but-identical file keeps its version.
    """

    def __init__(self, db_path: Path):
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(db_path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS fingerprints"
            " (key TEXT PRIMARY KEY, stat TEXT NOT NULL, version TEXT NOT NULL)"
        )

    def versions(self, run_dirs: Iterable[RunDir]) -> dict[str, str]:
        """Partition key -> content version for each run directory (hashing only those whose
        stat data changed, and remembering the new hashes)."""
        run_dirs = list(run_dirs)
        peeked = self.peek(run_dirs)
        result, updates = {}, []
        for run_dir in run_dirs:
            stat, version = peeked[run_dir.key]
            if version is None:
                version = content_hash(run_dir.path)
                updates.append((run_dir.key, stat, version))
            result[run_dir.key] = version
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?)", updates)
        return result

    def peek(self, run_dirs: Iterable[RunDir]) -> dict[str, tuple[str, str | None]]:
        """Key -> (stat signature, cached version, or None when the stat data changed and the
        directory must be hashed again). Stat calls only; nothing is written."""
        cached = {k: (s, v) for k, s, v in self._db.execute("SELECT * FROM fingerprints")}
        result = {}
        for run_dir in run_dirs:
            stat = stat_signature(run_dir.path)
            old = cached.get(run_dir.key)
            result[run_dir.key] = (stat, old[1] if old and old[0] == stat else None)
        return result

    def forget(self, keys: list[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM fingerprints WHERE key = ?", [(k,) for k in keys])

    def close(self) -> None:
        self._db.close()
