"""Ctrl-C (or SIGTERM) stops a batch run between partitions, however the signal lands.

During a step Dagster turns SIGINT/SIGTERM into an exception raised wherever the main thread
is. Aim closes its storage in garbage-collection finalizers, and an exception raised inside a
finalizer is printed and dropped: the interrupt was lost and the run went on for minutes. Here
the signal is also remembered, and the batch loops check it after each partition.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def remembered_interrupts() -> Iterator[Callable[[], None]]:
    """Yields `check()`, which re-raises a signal received so far through the handler that
    was installed before (Dagster's, during a step). Only Python-level handlers are wrapped;
    outside the main thread signals cannot be handled here and `check()` does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    previous = {sig: h for sig in _SIGNALS if callable(h := signal.getsignal(sig))}
    received: list[int] = []

    def remember(signum, frame) -> None:
        received.append(signum)
        previous[signum](signum, frame)

    def check() -> None:
        if received:
            previous[received[0]](received[0], None)

    for sig in previous:
        signal.signal(sig, remember)
    try:
        yield check
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
