"""`cleanup_removed` leaves no connection to the fingerprint cache's SQLite file open when
opening one of its stores there fails (the failed store's own connection included)."""

import os
import sqlite3
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest

from align_track_pipeline.core.locations import fingerprint_cache_path
from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.cleanup import cleanup_config


def _open_by_this_process(path: Path) -> list[str]:
    """What this process holds open of `path` (and of SQLite's -wal and -shm beside it)."""
    return [os.path.realpath(fd) for fd in Path("/proc/self/fd").iterdir()
            if os.path.realpath(fd).startswith(str(path.resolve()))]


@pytest.mark.parametrize("taken", ["parquet_files", "fingerprints"],
                         ids=["verified files fail", "fingerprints fail"])
def test_a_store_that_fails_to_open_leaves_no_connection_open(tmp_path, small_tree, data_dir,
                                                              dagster_storage, empty_stores,
                                                              taken):
    cache = fingerprint_cache_path(data_dir)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(cache)) as db:  # the name of the store's table taken
        db.execute("CREATE TABLE other (a)")
        db.execute(f"CREATE INDEX {taken} ON other (a)")
    defs = build_defs(str(small_tree), str(data_dir))
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = defs.resolve_job_def("cleanup_removed").execute_in_process(
            instance=instance, run_config=cleanup_config(["gone/run"]), raise_on_error=False)
        assert not result.success
        (failure,) = result.get_step_failure_events()
        assert f"already an index named {taken}" in str(failure.step_failure_data.error)
        assert _open_by_this_process(cache) == []
