"""What `align-track ingest` tells before it imports Dagster: the tree's run directories,
their stat signatures against the fingerprint cache, and whether the ingest will likely take
the fast path (a tree ingested before, a few folders changed: `cli.fast_path`). Then the fork
server its analysis worker is forked from (`cli.analysis_refresh`) starts at once, so that
its imports (two to three seconds of a core) overlap this process's own imports and the
tables instead of following them. A guess from the cache alone: a touched file that hashes
the same, say, starts a server no worker uses, stopped at the end of the ingest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from align_track_pipeline.cli.preload import ANALYSIS_PRELOAD, preload
from align_track_pipeline.core.lifeline import start_fork_server
from align_track_pipeline.core.locations import fingerprint_cache_path
from align_track_pipeline.core.secrets import mask_text
from align_track_pipeline.core.source.discovery import (
    CHANGED_RUNS_MAX,
    FingerprintCache,
    Scan,
    Stats,
    scan_tree,
)
from align_track_pipeline.core.verified import dagster_internals

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Ahead:
    """The scan, and the cache peeked at when the data dir holds one."""

    scan: Scan
    peeked: Stats | None = None
    peek_seconds: float = 0.0  # what the peek took: part of the observation the CLI reports


def look_ahead(experiments_dir: Path, data_dir: Path, workers: bool) -> Ahead:
    """Scan the tree and peek at the cache; with `workers` (a worker pool), start the fork
    server when 1 to `CHANGED_RUNS_MAX` folders changed on a Dagster whose fast path was
    verified (`fast_path.fast_path_applies`). Raises what `scan_tree` raises."""
    scan = scan_tree(experiments_dir)
    cache_path = fingerprint_cache_path(data_dir)
    if not cache_path.exists():  # never ingested here: nothing to peek at, nothing written
        return Ahead(scan)
    started = time.perf_counter()
    cache = FingerprintCache(cache_path)
    try:
        peeked = cache.peek(scan.run_dirs)
    except OSError:  # the ingest's own peek reports it
        return Ahead(scan)
    finally:
        cache.close()
    changed = sum(version is None for _stat, version in peeked.values())
    if workers and 0 < changed <= CHANGED_RUNS_MAX and dagster_internals():  # `fast_path`'s
        try:
            start_fork_server(preload(ANALYSIS_PRELOAD))
        except Exception as exc:  # noqa: BLE001  the ingest starts its workers itself
            log.warning("the analysis worker's fork server did not start ahead: %s: %s",
                        type(exc).__name__, mask_text(str(exc)))
    return Ahead(scan, peeked, time.perf_counter() - started)
