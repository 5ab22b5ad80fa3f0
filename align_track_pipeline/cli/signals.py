"""SIGTERM stops a command as Ctrl-C does, and the command can tell afterwards which it was.

Without a handler SIGTERM kills the process on the spot: nothing printed, not even `--json`'s
object. Here it raises KeyboardInterrupt like SIGINT. One handler serves both signals: after
each run Dagster gives SIGTERM whatever handler SIGINT has, so SIGINT's must be one that also
stops on SIGTERM. A shell starts a background job with SIGINT ignored; that stays so (the
handler drops SIGINT then), without SIGTERM being ignored with it.

During a Dagster run Dagster installs its own handler for both (they then end the run as an
interrupted step), which does not say which signal came; the interpreter's wakeup fd
(`signal.set_wakeup_fd`) is written the number of every signal that reaches a Python-level
handler, whoever installed it, so it is read back to name the signal.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as a shell says
_ACTIVE: list[Received] = []  # the `interrupts_recorded` blocks this process is in, inner last


def _handler(sigint_ignored: bool) -> Callable[[int, object], None]:
    def interrupt(signum: int, _frame) -> None:
        if signum == signal.SIGTERM:
            raise KeyboardInterrupt("SIGTERM")
        if not sigint_ignored:
            raise KeyboardInterrupt

    return interrupt


class Received:
    """The interrupting signals that reached this process, read from the wakeup fd."""

    def __init__(self, fd: int | None, counted: tuple[signal.Signals, ...] = INTERRUPTS):
        self._fd = fd
        self._counted = counted
        self._seen: list[signal.Signals] = []

    def first(self) -> signal.Signals | None:
        """The first of SIGINT / SIGTERM received so far; None: neither."""
        if self._fd is not None:
            with suppress(BlockingIOError):
                self._seen += [signal.Signals(n) for n in os.read(self._fd, 4096)
                               if n in self._counted]
        return self._seen[0] if self._seen else None

    def close(self) -> None:
        self.first()
        self._fd = None


@contextmanager
def interrupts_recorded() -> Iterator[Received]:
    """SIGTERM raises KeyboardInterrupt within the block; the yielded `Received` says which
    signals came. Off the main thread nothing changes and it never names one."""
    if threading.current_thread() is not threading.main_thread():
        yield Received(None)
        return
    previous = {sig: signal.getsignal(sig) for sig in INTERRUPTS}
    sigint_ignored = previous[signal.SIGINT] is signal.SIG_IGN
    ours = [signal.SIGTERM]
    if sigint_ignored or previous[signal.SIGINT] is signal.default_int_handler:
        ours.append(signal.SIGINT)  # never replaces a handler an embedding program set
    read, write = os.pipe()
    for fd in (read, write):
        os.set_blocking(fd, False)
    # SIGINT counts when this block handles it: not while ignored, nor when an embedding
    # program's own handler (kept) deals with it
    counted = INTERRUPTS if signal.SIGINT in ours and not sigint_ignored else (signal.SIGTERM,)
    received = Received(read, counted)
    previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    for sig in ours:
        signal.signal(sig, _handler(sigint_ignored))
    _ACTIVE.append(received)
    try:
        yield received
    finally:
        _ACTIVE.remove(received)
        for sig in ours:
            signal.signal(sig, previous[sig])
        signal.set_wakeup_fd(previous_fd)
        received.close()
        os.close(read)
        os.close(write)


def raise_if_received(during: str) -> None:
    """Raise a KeyboardInterrupt when a SIGINT/SIGTERM was received in the innermost
    `interrupts_recorded` block, raised before or not (the command is stopping either way):
    Dagster drops a signal that lands after a run's last step (it only remembers it for a
    next step), and the run then ends as if none came. `during`: what was running, as the
    interrupt's message tells. Outside such a block it does nothing."""
    if _ACTIVE and _ACTIVE[-1].first() is not None:
        raise KeyboardInterrupt(during)
