"""The ALIGN_TRACK_FAULT test hook: parsed strictly, read once, acts at exactly the N-th hit."""

import os
import signal
import subprocess
import sys

import pytest

from align_track_pipeline.core import faults
from align_track_pipeline.core.faults import Fault, fault_point


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.reset()
    yield
    faults.reset()


def test_parse():
    assert faults.parse(None) is None and faults.parse("") is None
    assert faults.parse("aim.run_created") == Fault("aim.run_created", 1, "kill")
    assert faults.parse("mlflow.partition_written:3") == Fault("mlflow.partition_written", 3)
    assert faults.parse("aim.run_created:5:sigint") == Fault("aim.run_created", 5, "sigint")
    for bad in ("x:0", "x:two", "x:1:boom", ":1", "x:-1"):
        with pytest.raises(ValueError, match="ALIGN_TRACK_FAULT"):
            faults.parse(bad)


class Interrupted(BaseException):
    pass


def _raise(_signum, _frame):
    raise Interrupted


def test_sigint_at_the_nth_hit_of_the_named_point_only(monkeypatch):
    monkeypatch.setenv(faults.ENV, "p:3:sigint")
    old = signal.signal(signal.SIGINT, _raise)
    try:
        fault_point("p")
        fault_point("other")  # other points do not count
        fault_point("p")
        with pytest.raises(Interrupted):
            fault_point("p")  # the third hit: the handler ran inside the call
        fault_point("p")  # once only
    finally:
        signal.signal(signal.SIGINT, old)


def test_unset_does_nothing_and_the_variable_is_read_once(monkeypatch):
    for _ in range(3):
        fault_point("p")
    monkeypatch.setenv(faults.ENV, "p:1:sigint")  # too late: read at the first call
    fault_point("p")
    faults.reset()
    monkeypatch.setenv(faults.ENV, "p:1:nonsense")
    with pytest.raises(ValueError):
        fault_point("p")


def test_kill_is_the_default_and_nothing_runs_after_it():
    code = ("import sys\n"
            "from align_track_pipeline.core.faults import fault_point\n"
            "assert 'dagster' not in sys.modules\n"
            "for i in range(5):\n"
            "    fault_point('p')\n"
            "    print(i, flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, faults.ENV: "p:2"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split() == ["0"]
