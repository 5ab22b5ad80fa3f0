"""Ctrl-C stops a batch run between partitions, even when the signal's exception was dropped
where it landed (Aim closes storage in finalizers, which swallow exceptions)."""

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from align_track_pipeline.cli.instance import open_instance
from align_track_pipeline.defs.interrupts import remembered_interrupts
from tests.conftest import aim_runs_held, aim_runs_seen_by_a_fresh_process


class Stop(BaseException):
    """What Dagster's handler raises during a step."""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_dropped_interrupt_is_raised_at_the_next_check(signum):
    def dagster_like(_signum, _frame):
        raise Stop()

    old = signal.signal(signum, dagster_like)
    try:
        with remembered_interrupts() as check:
            check()  # nothing received: nothing raised
            with contextlib.suppress(Stop):  # a finalizer drops what lands in it
                signal.raise_signal(signum)
            with pytest.raises(Stop):
                check()
        assert signal.getsignal(signum) is dagster_like  # restored
    finally:
        signal.signal(signum, old)


@pytest.mark.slow
def test_ctrl_c_during_the_aim_phase_stops_the_ingest(small_tree, data_dir):
    """SIGINT as Aim creates its 5th run, the first of the second partition."""
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(small_tree), "--data-dir", str(data_dir)]
    stopped = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                             env={**os.environ, "ALIGN_TRACK_FAULT": "aim.run_created:5:sigint"})
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    assert "align-track: interrupted" in stopped.stderr
    with open_instance(data_dir) as instance:
        first = instance.get_dynamic_partitions("experiments")[0]
    scenes = ds.dataset(data_dir / "parquet" / "scenes").to_table()
    assert scenes.column("partition_key").to_pylist().count(first) == 4
    before = aim_runs_held(data_dir / "aim")
    assert len(before) == 4  # stopped at once: the 5th, cut short on the stage, left nothing

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    seen = aim_runs_seen_by_a_fresh_process(data_dir / "aim")
    assert len(seen) == scenes.num_rows
    assert len({(r["params"]["partition_key"], r["params"]["scene_index"]) for r in seen}) == (
        scenes.num_rows)  # one run per scene
    assert aim_runs_held(data_dir / "aim") == {r["hash"] for r in seen}  # no leftovers
    kept = [r for r in seen if r["hash"] in before]
    assert {r["params"]["partition_key"] for r in kept} == {first} and len(kept) == 4
