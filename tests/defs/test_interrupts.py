"""Ctrl-C stops a batch run between partitions, even when the signal's exception was dropped
where it landed (Aim closes storage in finalizers, which swallow exceptions)."""

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from align_track_pipeline.defs.interrupts import remembered_interrupts
from tests.conftest import aim_runs_seen_by_a_fresh_process


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


def test_ctrl_c_during_the_aim_phase_stops_the_ingest(sample_tree, data_dir):
    cmd = [str(Path(sys.executable).parent / "align-track"), "ingest", "--json",
           "--experiments-dir", str(sample_tree), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith("aim run"):
            break
    time.sleep(1)  # a few partitions in
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - started < 10  # the Aim phase alone takes longer
    runs = len(aim_runs_seen_by_a_fresh_process(data_dir / "aim"))
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert runs < len(aim_runs_seen_by_a_fresh_process(data_dir / "aim"))
