"""Progress of a batch run, the same for every phase: `[n/N] key: what (rate)`.

About 20 lines per run (log lines are stored events too), and the last partition always, so
the CLI and the UI's run log tell how far each phase is and how fast it goes."""

from __future__ import annotations

import logging
import time

LINES_PER_RUN = 20


class Progress:
    def __init__(self, log: logging.Logger, total: int) -> None:
        self._log = log
        self._total = total
        self._every = max(1, total // LINES_PER_RUN)
        self._started = time.perf_counter()

    def done(self, n: int, key: str, what: str) -> None:
        """Partition `n` of the run (1-based), `key`, is written; `what` says what it held."""
        if n % self._every and n != self._total:
            return
        rate = n / max(time.perf_counter() - self._started, 1e-6)
        self._log.info(f"[{n}/{self._total}] {key}: {what} ({rate:.1f} partitions/s)")
