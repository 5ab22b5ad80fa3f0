"""A reader of stdout that went away (`align-track search | head`): what it read was all it
wanted, so the command ends quietly, as `cat` or `grep` do, instead of with a traceback."""

from __future__ import annotations

import os
import select
import sys

READER_GONE = 141  # the shell's code for a process ended by SIGPIPE (128 + 13)


def reader_gone(exc: BaseException) -> bool:
    """`exc` is a broken pipe and the pipe is stdout's, its reading end closed: a broken pipe
    to anything else (a tracking server's socket) is a fault to report."""
    if not isinstance(exc, BrokenPipeError):
        return False
    try:
        poll = select.poll()
        poll.register(sys.__stdout__.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no stdout, or not a file descriptor
        return False


def discard_stdout() -> int:
    """Point stdout at /dev/null, so the exit's flush of what is still buffered fails no
    more; returns READER_GONE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())
    os.close(devnull)
    return READER_GONE
