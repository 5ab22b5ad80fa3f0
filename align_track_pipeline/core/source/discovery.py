"""Find run directories in an experiment-data tree, name them, and fingerprint their inputs.

A run directory holds `input_output.json`. Any path with a component containing `OUTDATED`
(any case) is skipped. Directory symlinks are followed only while they stay inside the tree,
and each real directory is visited once, so loops and aliases cannot recurse or duplicate.

A folder that cannot be read (permissions, I/O error, a stale network handle), or a symlink
that leads out of the tree or nowhere, is never taken for an empty one: the scan names it with
the reason, so whatever it held is not "removed".
"""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import re
import sqlite3
import stat as statmod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import unquote

from align_track_pipeline.core.source.files import read_regular_file

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
    """One experiment run directory: its path and its partition key; from a scan, also the
    names its folder held then (lower case), so that only the source files among them are
    looked at (a stat call each: most of what a pass over a large tree costs).

    The path is kept as a string and made a `Path` only when asked: building a `Path` per
    folder cost a scan of 10,000 folders as much as its `scandir` calls."""

    folder: str  # the run directory's path (a `Path` given is stored as its string)
    rel_path: str
    listing: frozenset[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.folder, str):
            object.__setattr__(self, "folder", os.fspath(self.folder))

    @cached_property
    def path(self) -> Path:
        return Path(self.folder)

    @cached_property
    def key(self) -> str:  # asked for several times a folder on every tick: computed once
        return partition_key(self.rel_path)


def partition_key(rel_path: str) -> str:
    """Encode a relative path as a Dagster-safe partition key (reversible, readable)."""
    if rel_path in ("", "."):
        return ROOT_KEY
    return _UNSAFE.sub(lambda m: "".join(f"%{ord(c):02X}" for c in m.group()), rel_path)


def rel_path_of(key: str) -> str:
    """Inverse of `partition_key`."""
    return "." if key == ROOT_KEY else unquote(key)


def skipped(name: str) -> bool:
    """Hidden folders (.hydra, .git) hold no run directories; OUTDATED ones are retired."""
    return name.startswith(".") or "outdated" in name.lower()


# A folder that vanished between its parent's listing and its own is gone; any other error
# (EACCES, EIO, ESTALE, ...) means it is there and cannot be read.
_GONE = (errno.ENOENT, errno.ENOTDIR)


class TreeUnreadable(OSError):
    """The tree's root is missing, not a folder, or cannot be listed."""


@dataclass(frozen=True)
class Scan:
    """What a pass over the tree found: the run directories, and the folders it could not read
    (relative path -> reason), below which nothing may be taken as removed."""

    run_dirs: list[RunDir]
    unreadable: dict[str, str]

    def hidden(self, rel_path: str) -> str | None:
        """Why `rel_path` could not be seen (it is at or below an unreadable folder), or None."""
        for folder, reason in self.unreadable.items():
            if folder == "." or rel_path == folder or rel_path.startswith(folder + "/"):
                return reason
        return None


def scan_tree(root: Path) -> Scan:
    """Every run directory under `root` (root included), sorted by relative path, and every
    folder that could not be read. Raises `TreeUnreadable` when the root itself cannot be
    listed: an unmounted or mistyped tree must never read as an empty one."""
    root = Path(root)
    check_root(root)
    real_root = os.path.realpath(root)
    unreadable: dict[str, str] = {}
    with no_collector_pauses():
        found = _walk(os.fspath(root), real_root, unreadable)
    return Scan(sorted(found, key=lambda r: r.rel_path), unreadable)


@contextmanager
def no_collector_pauses() -> Iterator[None]:
    """Python's cycle collector off for the block: a pass over a large tree allocates a few
    objects per folder (none in a cycle), which set off full collections of the process's
    whole heap (Dagster's, in a sensor or an ingest): 0.2 s pauses, a third of a no-change
    tick over 10,000 folders."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def check_root(root: Path) -> None:
    """Raise `TreeUnreadable` unless the tree's root can be listed."""
    try:
        os.scandir(root).close()
    except OSError as exc:
        raise TreeUnreadable(exc.errno, f"experiment-data tree not found or not readable: "
                             f"{root} ({exc.strerror})") from exc


def find_run_dirs(root: Path) -> list[RunDir]:
    """The run directories of `scan_tree(root)`, for callers that only read the tree."""
    return scan_tree(root).run_dirs


def _walk(root: str, real_root: str, unreadable: dict[str, str]) -> list[RunDir]:
    """Each run directory at and below `root` (whose real path is `real_root`), with the names
    its folder holds in lower case; folders that cannot be listed go into `unreadable` with
    the reason. Each real folder is visited once, in name order, depth first, by its own path
    where it has one without links: a symlink to a folder inside the tree (`latest` ->
    `2025-06-12__14-03-55`) is followed only after the walk without links, so an alias never
    names a partition its folder names, and re-pointing it changes no partition.

    Works on strings and directory entries, with a stack rather than recursion: a real path
    is resolved only through symlinks, and a directory's entries tell whether it holds
    input_output.json without a stat call, so a pass over a large tree costs little more
    than its `scandir` calls.
    """
    found: list[RunDir] = []
    seen: set[str] = set()
    stack = [(root, ".", real_root)]
    links: list[tuple[str, str, str]] = []  # folders reached through a symlink: walked last
    while stack or links:
        if not stack:
            stack, links = list(reversed(links)), []
        path, rel, real = stack.pop()
        if real in seen or not _inside(real, real_root):
            continue
        seen.add(real)
        try:
            with os.scandir(path) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            if exc.errno not in _GONE:
                unreadable[rel] = f"cannot read folder {path}: {exc.strerror}"
            continue
        names = [e.name for e in entries]
        if INPUT_OUTPUT in names:
            found.append(RunDir(path, rel, frozenset(n.lower() for n in names)))
        prefix = "" if rel == "." else rel + "/"
        children = []
        among_folders = INPUT_OUTPUT not in names  # a run folder's own links: its files
        for entry in entries:
            name = entry.name
            if skipped(name) or not _is_dir(entry, prefix + name, real_root, unreadable,
                                             among_folders):
                continue
            child_real = (os.path.realpath(entry.path) if entry.is_symlink()
                          else real + os.sep + name)
            if not _inside(child_real, real_root):  # not followed; what it held is not gone
                if among_folders:
                    unreadable[prefix + name] = (f"{entry.path} leads out of the tree (to "
                                                 f"{child_real}): not followed")
                continue
            (links if entry.is_symlink() else children).append(
                (entry.path, prefix + name, child_real))
        stack.extend(reversed(children))  # popped in name order
    return found


def _is_dir(entry: os.DirEntry, child: str, real_root: str,
            unreadable: dict[str, str], among_folders: bool) -> bool:
    """Whether the entry (`child`, relative to the tree) is a folder. One whose type cannot be
    read, or a symlink whose target is missing or cannot be reached, is recorded as
    unreadable: what was below it cannot be seen, so it is not gone (a run folder moved to a
    share and linked back reads so while the share is not mounted). Outside a run folder
    (`among_folders`) only: a run folder's own files are the parser's to report. (Symlinks out
    of the tree are never followed: `_walk` records them.)"""
    try:
        if entry.is_dir(follow_symlinks=True):
            return True
        if entry.is_symlink() and (among_folders
                                   or _inside(os.path.realpath(entry.path), real_root)):
            os.stat(entry.path)  # raises when the target is missing or cannot be reached
    except OSError as exc:
        unreadable[child] = f"cannot read {entry.path}: {exc.strerror}"
    return False


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root + os.sep)


# The name in a run directory's own listing that each source file is found under.
_LISTED_AS = {name: name.split("/")[0].lower() for name in SOURCE_FILES}


def _source_stats(run_dir: Path | str, listing: frozenset[str] | None = None,
                  ) -> list[tuple[str, os.stat_result | OSError]]:
    """(relative name, stat) of each source file present in a run directory; a file that
    cannot be looked at comes with its error instead (it may be there: it is not absent).
    With the folder's `listing` (from a scan), names it does not hold are not looked for."""
    base = os.fspath(run_dir) + os.sep
    found: list[tuple[str, os.stat_result | OSError]] = []
    for name in SOURCE_FILES:
        if listing is not None and _LISTED_AS[name] not in listing:
            continue
        try:
            st = os.stat(base + name)
        except OSError as exc:
            if exc.errno not in _GONE:
                found.append((name, exc))
            continue
        if statmod.S_ISREG(st.st_mode):
            found.append((name, st))
    if listing is not None and TARGETS_DIR not in listing:
        return found
    try:
        targets = sorted(os.scandir(base + TARGETS_DIR), key=lambda e: e.name)
    except OSError as exc:  # no targets/ folder (the common case)
        if exc.errno not in _GONE:
            found.append((TARGETS_DIR, exc))
        return found
    for entry in targets:
        if entry.name.endswith(".json") and entry.is_file():
            found.append((f"{TARGETS_DIR}/{entry.name}", entry.stat()))
    return found


def source_paths(run_dir: Path) -> list[str]:
    """Relative names of the source files present in a run directory (or unreadable)."""
    return [name for name, _ in _source_stats(run_dir)]


def stat_signature(run_dir: Path | str, listing: frozenset[str] | None = None) -> str:
    """Cheap change detector: names, sizes, mtimes and inodes of the source files (`listing`:
    as in `_source_stats`)."""
    parts = []
    for name, st in _source_stats(run_dir, listing):
        if isinstance(st, OSError):
            parts.append(f"{name}:unreadable:{st.errno}")
        else:
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
    return "|".join(parts)


def content_hash(run_dir: Path) -> str:
    """The partition's data version: a hash of the source files' names and bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for name in source_paths(run_dir):
        digest.update(name.encode() + b"\0")
        try:
            digest.update(read_regular_file(run_dir / name))
        except OSError as exc:  # unreadable now: a distinct version, parse reports why
            digest.update(f"unreadable:{exc.errno}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


# The most changed (already known) folders that get a run each from the discovery sensor, and
# the fast path of `align-track ingest`; more go the batched way.
CHANGED_RUNS_MAX = 4

# Run dir key -> (stat signature, cached version or None: to hash), what `FingerprintCache.peek`
# tells.
Stats = dict[str, tuple[str, str | None]]


class FingerprintCache:
    """Content hashes keyed by stat signature, kept in a small SQLite file: a per-host cache
    (see `locations.fingerprint_cache_path`). Losing it only costs re-hashing; it is never
    shared between hosts (stat data differs per client of a network filesystem).

    Only directories whose stat signature changed are re-hashed, so a pass over a large
    unchanged tree costs stat calls only, and a touched-but-identical file keeps its version.
    """

    def __init__(self, db_path: Path):
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(db_path, timeout=30)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS fingerprints"
                " (key TEXT PRIMARY KEY, stat TEXT NOT NULL, version TEXT NOT NULL)"
            )
        except BaseException:  # no object to close it through: not left open
            self._db.close()
            raise

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

    def peek(self, run_dirs: Iterable[RunDir]) -> Stats:
        """Key -> (stat signature, cached version, or None when the stat data changed and the
        directory must be hashed again). Stat calls only; nothing is written."""
        with no_collector_pauses():
            cached = {k: (s, v) for k, s, v in self._db.execute("SELECT * FROM fingerprints")}
            result = {}
            for run_dir in run_dirs:
                stat = stat_signature(run_dir.folder, run_dir.listing)
                old = cached.get(run_dir.key)
                result[run_dir.key] = (stat, old[1] if old and old[0] == stat else None)
        return result

    def forget(self, keys: list[str]) -> None:
        with self._db:
            self._db.executemany("DELETE FROM fingerprints WHERE key = ?", [(k,) for k in keys])

    def close(self) -> None:
        self._db.close()
