"""The `align-track` command and its in-process runner (phases, progress, interrupts, the
local Dagster instance): a second way to run the pipeline, beside the daemon.

The command's modules (Dagster, its definitions: a second or more) are imported here with
SIGTERM taken as an interrupt, so a command stopped while it starts still says so, and `--json`
still prints its one object, instead of the process vanishing silently. (The import stays at
the package's import: importing the submodule `cli.main` binds the package's name `main` to
it, which the function below then binds back.)"""

from __future__ import annotations

import json
import signal
import sys

from align_track_pipeline.cli.fast_exit import exit_now
from align_track_pipeline.cli.signals import EXIT_CODES, interrupts_recorded

__all__ = ["main"]

with interrupts_recorded() as _received:
    try:
        from align_track_pipeline.cli.main import main as command
    except KeyboardInterrupt:
        _stopped: signal.Signals | None = _received.first() or signal.SIGINT
    else:  # an interrupt a library's import swallowed (a bare except, a __del__) still counts
        _stopped = _received.first()


def main(argv: list[str] | None = None) -> int:
    """The installed `align-track` script (no `argv`: the command line) ends the process when
    the command is done, without Python's teardown (`fast_exit`); with `argv` (a caller in
    this process) the exit code is returned."""
    if _stopped is not None:
        return _stopped_while_starting(argv, _stopped)
    code = command(argv)
    if argv is None:
        exit_now(code)
    return code


def _stopped_while_starting(argv: list[str] | None, signum: signal.Signals) -> int:
    error = f"interrupted by {signum.name} (while starting: nothing was read or written)"
    print(f"align-track: {error}", file=sys.stderr, flush=True)
    if "--json" in (sys.argv[1:] if argv is None else argv):
        print(json.dumps({"error": error, "signal": signum.name}), flush=True)
    return EXIT_CODES[signum]
