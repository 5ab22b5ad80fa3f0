"""Rows per partition file, kept beside the tables so a batch does not read every footer.

A table's size ("rows in table" on each partition) is the sum over its partition files. Reading
all their Parquet footers costs about half a millisecond a file: most of a one-partition batch
at a few hundred partitions. `<data dir>/state/row_counts/<table>.json` keeps each file's count
with the file's inode, size and mtime; a count is used only while the file still has all three
(a write replaces the file: a new inode and mtime), so it is always the count its footer
holds. Losing or corrupting the cache costs a read of every footer, nothing else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from align_track_pipeline.core.atomic import write_text_atomically

Stat = tuple[int, int, int]  # inode, size, mtime in ns


def cache_path(parquet_root: Path, table: str) -> Path:
    return parquet_root.parent / "state" / "row_counts" / f"{table}.json"


def counted(folder: Path, cache: Path, rows_of: Callable[[Path], int | None]) -> dict[str, int]:
    """File name -> rows of each partition file in `folder`: from `cache` for the files whose
    stat data it recorded, from `rows_of` (None: unreadable, counted 0 and not recorded) for
    the others; the cache is rewritten when it changed."""
    known = _load(cache)
    found: dict[str, tuple[Stat, int]] = {}
    counts: dict[str, int] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.name.endswith(".parquet"):
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:  # removed meanwhile
                continue
            key = (entry.inode(), stat.st_size, stat.st_mtime_ns)
            cached = known.get(entry.name)
            rows = cached[1] if cached and cached[0] == key else rows_of(Path(entry.path))
            counts[entry.name] = rows or 0
            if rows is not None:
                found[entry.name] = (key, rows)
    if found != known:
        _save(cache, found)
    return counts


def _load(cache: Path) -> dict[str, tuple[Stat, int]]:
    try:
        raw = json.loads(cache.read_text())
        return {name: ((int(i), int(s), int(m)), int(rows))
                for name, (i, s, m, rows) in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError):  # none yet, or unusable
        return {}


def _save(cache: Path, found: dict[str, tuple[Stat, int]]) -> None:
    """Atomically; a cache that cannot be written is only a slower next batch."""
    with suppress(OSError):
        write_text_atomically(
            cache, json.dumps({name: [*stat, rows] for name, (stat, rows) in found.items()}))
