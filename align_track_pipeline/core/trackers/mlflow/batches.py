"""Which of a partition's write batches to keep, when writers share an MLflow server.

Over HTTP there is no transaction: several writers may write the same partition at once, each
as one batch (the runs carry the batch id in a tag). Every writer then keeps the same batch: the
smallest id among the batches that are complete or still being written by a live writer. A
batch id starts with its creation time, so the batch begun first usually wins and a writer that
sees one in progress waits for it instead of writing its own. Liveness is a guess that only
saves work; correctness never depends on it, because each writer returns only after it saw the
partition converged.

A batch is being written when its writer is this process and it is writing it now, or when
its writer may be alive (a process on this host that exists, or any writer on another host)
and the batch grew in the last `GRACE_SECONDS` this writer watched it.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from align_track_pipeline.core.processes import process_alive

GRACE_SECONDS = 15.0  # a batch that stopped growing this long ago is abandoned

_writing: set[str] = set()  # the batches this process is writing right now


@dataclass(frozen=True)
class BatchId:
    """Who writes a batch (ids sort by their creation time first)."""

    pid: int
    host: str

    @staticmethod
    def parse(batch: str) -> BatchId | None:
        """`<ms, 12 hex>.<random>.<pid>@<host>`; None for ids from older versions."""
        try:
            _stamp, _random, writer = batch.split(".", 2)
            pid, host = writer.split("@", 1)
            return BatchId(int(pid), host)
        except ValueError:
            return None


def new_batch_id(clock: Callable[[], float] = time.time) -> str:
    return (f"{int(clock() * 1000):012x}.{uuid.uuid4().hex[:8]}."
            f"{os.getpid()}@{socket.gethostname()}")


class writing:
    """Marks a batch as being written by this process for the duration of the block."""

    def __init__(self, batch: str):
        self.batch = batch

    def __enter__(self) -> str:
        _writing.add(self.batch)
        return self.batch

    def __exit__(self, *_exc) -> None:
        _writing.discard(self.batch)


@dataclass
class Watch:
    """What one settling writer has seen of other writers' batches, to tell live from dead."""

    grace_seconds: float = GRACE_SECONDS
    clock: Callable[[], float] = time.monotonic  # injectable: tests step time without sleeping
    _seen: dict[str, tuple[int, float]] = field(default_factory=dict)  # batch -> size, since

    def alive(self, batch: str, size: int) -> bool:
        found = BatchId.parse(batch)
        if found is None:
            return False
        if found.host == socket.gethostname():
            if found.pid == os.getpid():
                return batch in _writing
            if not process_alive(found.pid):
                return False
        now = self.clock()
        last_size, since = self._seen.get(batch, (-1, now))
        if size != last_size:
            since = now
        self._seen[batch] = (size, since)
        return now - since < self.grace_seconds


def keeper(batches: dict[str, tuple[bool, bool]], watch: Watch,
           sizes: dict[str, int]) -> str | None:
    """The batch every writer keeps: the smallest id that is complete, or plausible (its runs
    match the plan so far) and still being written. `batches`: id -> (complete, plausible)."""
    kept = [b for b, (complete, plausible) in batches.items()
            if complete or (plausible and watch.alive(b, sizes[b]))]
    return min(kept) if kept else None
