"""`aim up` that stops its server with it: `python -m` this module with `aim up`'s options."""

from __future__ import annotations

import os
import signal
import sys
from contextlib import suppress
from pathlib import Path


def _stop(signum: int, _frame: object) -> None:
    """`aim up` runs its server as a child and leaves it running when only `aim up` is
    signalled (`kill PID`): pass the signal on to the children, then exit."""
    for pid in _children(os.getpid()):
        with suppress(ProcessLookupError):
            os.kill(pid, signum)
    raise SystemExit(128 + signum)


def _children(parent: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                out.append(int(stat.parent.name))
    return out


if __name__ == "__main__":
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _stop)
    from aim.cli.up import commands

    commands.up.main(args=sys.argv[1:], prog_name="aim up")
