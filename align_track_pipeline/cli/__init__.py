"""The `align-track` command and its in-process runner (phases, progress, interrupts, the
local Dagster instance): a second way to run the pipeline, beside the daemon."""

from __future__ import annotations

from align_track_pipeline.cli.fast_exit import exit_now
from align_track_pipeline.cli.main import main as command

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The installed `align-track` script (no `argv`: the command line) ends the process when
    the command is done, without Python's teardown (`fast_exit`); with `argv` (a caller in
    this process) the exit code is returned."""
    code = command(argv)
    if argv is None:
        exit_now(code)
    return code
