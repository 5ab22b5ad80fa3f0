"""Adding runs to an Aim repo's index.

Since Aim 3.28, `Run.close()` no longer adds a run to the repo index; only `aim up`'s
background indexer or `aim storage reindex` do, and a full reindex reopens the index per run.
Indexing just the new runs while holding the index container open once is what `index_runs`
does, with the same steps as Aim's own `RepoIndexManager.index`. Each function wraps one Aim
internal (tests/core/test_aim_compat.py pins it); on an Aim version the writer was not
verified on (`verified.aim_internals`) each run goes through `RepoIndexManager.index`, the
step of Aim's own indexer (as Aim's `aim storage` commands use it), and every run counts as
outdated. Aim's internals are imported where they are used, so that this module imports on any
Aim.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from aim import Repo

from align_track_pipeline.core.faults import fault_point
from align_track_pipeline.core.trackers.aim.staging import RunRecords
from align_track_pipeline.core.trackers.aim.storage import all_run_hashes
from align_track_pipeline.core.verified import aim_internals


class IndexBusy(RuntimeError):
    """Another process (typically `aim up`'s indexer) holds the repo index open."""


def outdated_runs(repo: Repo) -> list[str]:
    """Runs whose index entry is missing or older than their data (what `aim up` indexes);
    on an unverified Aim, every run."""
    if not aim_internals():
        return all_run_hashes(repo)
    from aim.sdk.index_manager import RepoIndexManager

    manager = RepoIndexManager.get_index_manager(repo)
    index = repo.request_tree("meta", read_only=True)
    try:
        return [h for h in all_run_hashes(repo)
                if manager._get_run_checksum(h) != index.get(("index_cache", h))]
    finally:
        repo.container_pool.clear()


def index_runs(repo: Repo, run_hashes: Iterable[str], wait_seconds: float = 30.0,
               records: Mapping[str, RunRecords] | None = None) -> int:
    """Add runs to the repo index, opening the index once; returns how many were indexed.
    A run with `records` (from `staging.publish_run`) is not opened again: that was half the
    cost.

    Raises IndexBusy if the index stays locked by another process for `wait_seconds`.
    """
    hashes = list(run_hashes)
    if not hashes:
        return 0
    if not aim_internals():
        return _index_one_by_one(repo, hashes)
    from aim.sdk.index_manager import RepoIndexManager

    manager = RepoIndexManager.get_index_manager(repo)
    index = _open_index(repo, wait_seconds)
    try:
        target = index.container
        batch = target.batch()  # one write for every run with records, not one per record
        for run_hash in hashes:
            found = (records or {}).get(run_hash)
            if found is None:
                _finalize(repo, run_hash, index)
            else:
                target.delete_range(found.prefix, found.prefix + b"\xff", store_batch=batch)
                for key, value in found.items:
                    target.set(key, value, store_batch=batch)
        target.commit(batch)
        fault_point("aim.index_records_written")
        for run_hash in hashes:  # after the runs' records: a kill between leaves them outdated
            index["index_cache", run_hash] = manager._get_run_checksum(run_hash)
    finally:
        repo.container_pool.clear()  # release the index for `aim up`
    return len(hashes)


def _index_one_by_one(repo: Repo, hashes: list[str]) -> int:
    """Aim's own indexer step for each run, the index reopened per run."""
    from aim.sdk.index_manager import RepoIndexManager

    manager = RepoIndexManager.get_index_manager(repo)
    try:
        for run_hash in hashes:
            manager.index(run_hash)
    finally:
        repo.container_pool.clear()
    return len(hashes)


def _finalize(repo: Repo, run_hash: str, index) -> None:
    """Aim's own way (`RepoIndexManager.index`): reopen the run, copy it into the index."""
    tree = (repo.request_tree("meta", run_hash, read_only=True, skip_read_optimization=True)
            .subtree("meta").subtree("chunks").subtree(run_hash))
    tree.finalize(index=index)


def rebuild_index(repo: Repo) -> int:
    """Aim's own full rebuild (slow: superlinear in the number of runs): what `aim storage
    reindex` does, that command itself on an unverified Aim."""
    count = len(all_run_hashes(repo))
    if aim_internals():
        repo._recreate_index()
    else:
        aim = Path(sys.executable).parent / "aim"
        subprocess.run([str(aim), "storage", "--repo", str(Path(repo.path).parent), "reindex",
                        "--yes"], check=True, capture_output=True)
    repo.container_pool.clear()
    return count


def _open_index(repo: Repo, wait_seconds: float):
    """The repo index, writable, waiting while another process holds it (RocksDB's lock)."""
    from aimrocks.errors import RocksIOError

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return repo._get_index_tree("meta", 0).view(())
        except RocksIOError as exc:
            repo.container_pool.clear()
            if time.monotonic() >= deadline:
                raise IndexBusy(
                    f"the index of Aim repo {repo.path} is held by another process (is `aim up` "
                    "indexing?); its indexer will add the new runs, or re-run aim-reindex") from exc
            time.sleep(0.5)
