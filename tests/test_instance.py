"""The CLI's Dagster instance."""

import subprocess
import sys

import pytest

OPEN = ("import sys; from align_track_pipeline.cli.instance import open_instance; "
        "open_instance(sys.argv[1]).get_runs(limit=1)")


@pytest.mark.slow
def test_processes_creating_one_instance_at_once_all_open_it(tmp_path):
    """Created by several processes at once, a SQLite instance used to end with two schema
    stamps that no process could open again."""
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(tmp_path)],
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    subprocess.run([sys.executable, "-c", OPEN, str(tmp_path)], check=True, timeout=300)
