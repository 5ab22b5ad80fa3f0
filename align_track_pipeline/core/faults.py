"""Test hook: act at a named point of the writers, so a test can kill or interrupt a process
at an exact place instead of after a sleep.

    ALIGN_TRACK_FAULT=NAME[:N[:ACTION]]    e.g. mlflow.partition_written:3, aim.run_created:5:sigint

At the N-th call of `fault_point(NAME)` in the process (default 1), ACTION happens: `kill`
(SIGKILL to the process itself, the default: nothing runs after it) or `sigint` / `sigterm`
(the signal is raised in the process, as a Ctrl-C or `kill` from outside would be). The
variable is read once per process; unset, a fault point costs a function call.

The points:
  mlflow.run_created        API backend: a run was created (partition tag only), nothing logged
  mlflow.traces_sent        API backend: a partition's traces were sent, not yet their scores
  mlflow.partition_written  a partition's runs or traces were replaced or deleted (transaction
                            committed, or every API run terminated and every trace read back)
  aim.run_created           Aim created a run; the manifest holds only its placeholder
  aim.run_row_inserted      a staged run's run-table row was inserted, its data not moved in
  aim.runs_complete         a partition's runs were written and marked complete, not yet indexed
  aim.index_records_written the index holds the new runs' records, not yet their checksums
  aim.partition_written     a partition's runs were written, marked complete and indexed
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from align_track_pipeline.core.settings import current

ENV = "ALIGN_TRACK_FAULT"
ACTIONS = {"kill": signal.SIGKILL, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM}


@dataclass(frozen=True)
class Fault:
    point: str
    hit: int = 1
    action: str = "kill"


def parse(value: str | None) -> Fault | None:
    """`NAME[:N[:ACTION]]` -> Fault; None when unset or empty. Raises ValueError on a typo,
    so a test never passes because its fault silently did nothing."""
    if not value:
        return None
    point, _, rest = value.partition(":")
    hit, _, action = rest.partition(":")
    fault = Fault(point, int(hit) if hit.isdigit() else -1 if hit else 1, action or "kill")
    if not point or fault.hit < 1 or fault.action not in ACTIONS:
        raise ValueError(f"{ENV}={value!r}: expected NAME[:N[:{'|'.join(ACTIONS)}]], N >= 1")
    return fault


_UNREAD = object()
_fault: Fault | None | object = _UNREAD
_hits = 0


def fault_point(name: str) -> None:
    """Act here if ALIGN_TRACK_FAULT names this point and this is the chosen hit."""
    global _fault, _hits
    if _fault is _UNREAD:
        _fault = parse(current().get(ENV))
    if _fault is None or _fault.point != name:
        return
    _hits += 1
    if _hits == _fault.hit:
        if _fault.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        else:  # on the main thread, the handler runs before raise_signal returns
            signal.raise_signal(ACTIONS[_fault.action])


def reset() -> None:
    """Forget the variable and the hits (tests change the variable within one process)."""
    global _fault, _hits
    _fault, _hits = _UNREAD, 0
