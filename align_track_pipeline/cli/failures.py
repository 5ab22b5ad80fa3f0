"""Why a command stopped, in one line a user can act on, and its exit code: what `--json`
prints as `{"error": ...}` and the CLI otherwise prints on stderr. No Dagster import.

A full disk reaches the CLI in several guises: Python's OSError ENOSPC, SQLite's "database or
disk is full", and as often SQLite's "disk I/O error" (a failed write of its journal), each
possibly wrapped by SQLAlchemy or Dagster. Each is named "no space left on <path>", the path
being the file when Python knows it, else the first of the stores that has (almost) no space
left; a "disk I/O error" on a disk with room stays what it is.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from align_track_pipeline.cli.exits import PoolTimeout, PortInUse, StoreUnreachable
from align_track_pipeline.cli.signals import EXIT_CODES
from align_track_pipeline.core.guard import Refusal
from align_track_pipeline.core.secrets import mask_text
from align_track_pipeline.core.source.discovery import TreeUnreadable
from align_track_pipeline.core.trackers.base import TargetError

FULL_BELOW = 1 << 20  # bytes free under which a file system counts as full
_NO_SPACE = ("database or disk is full", "no space left on device")
_IO_ERROR = "disk i/o error"
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


@dataclass(frozen=True)
class Failure:
    error: str
    code: int = 1
    extra: dict = field(default_factory=dict)
    expected: bool = True  # False: a bug or an unforeseen fault, worth its traceback

    def as_json(self) -> dict:
        return {"error": self.error, **self.extra}


def describe(exc: BaseException, stores: Sequence[Path],
            signum: signal.Signals | None = None) -> Failure | None:
    """What to tell about `exc`; None for a SystemExit that carries its own exit code.
    `stores`: the local folders and files written (data dir first); `signum`: the signal that
    interrupted, if one did."""
    if isinstance(exc, KeyboardInterrupt):
        signum = signum or signal.SIGINT
        during = str(exc).removeprefix(signum.name) or "between runs"
        return Failure(f"interrupted by {signum.name} ({during})", EXIT_CODES[signum],
                       {"signal": signum.name})
    if isinstance(exc, SystemExit):
        return Failure(str(exc.code).removeprefix("align-track: ")) if isinstance(
            exc.code, str) else None
    if isinstance(exc, TargetError | Refusal | TreeUnreadable):  # refused before any write
        return Failure(str(exc), 2)  # each names a store without its credentials
    if isinstance(exc, PoolTimeout | StoreUnreachable | PortInUse):
        return Failure(str(exc))
    return _storage(exc, stores) or Failure(mask_text(f"{type(exc).__name__}: {exc}"),
                                            expected=False)


def _storage(exc: BaseException, stores: Sequence[Path]) -> Failure | None:
    """A full disk or an unwritable store anywhere in the exception's chain."""
    for cause in _chain(exc):
        text = str(cause).lower()
        filename = getattr(cause, "filename", None) if isinstance(cause, OSError) else None
        known = [Path(filename)] if filename else []
        if (isinstance(cause, OSError) and cause.errno == errno.ENOSPC) or any(
                s in text for s in _NO_SPACE):
            return _no_space(full_store([*known, *stores]) or (known or stores)[0])
        if _IO_ERROR in text and (full := full_store(stores)):
            return _no_space(full)
        if isinstance(cause, OSError) and cause.errno in _UNWRITABLE and filename:
            return Failure(f"cannot write {filename}: {cause.strerror}",
                           extra={"path": str(filename)})
    return None


def _no_space(path: Path) -> Failure:
    return Failure(f"no space left on {path}", extra={"path": str(path)})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def full_store(paths: Sequence[Path]) -> Path | None:
    """The first of `paths` whose file system has less than FULL_BELOW bytes free."""
    for path in paths:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None:
            continue
        stat = os.statvfs(existing)
        if stat.f_bavail * stat.f_frsize < FULL_BELOW:
            return path
    return None
