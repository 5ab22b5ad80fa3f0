"""The files a data dir's pipeline owns, so that a command writing a file the user names
(`export`, `report -o`, `compare --html`, `dashboard -o`) never writes over one or among them.

A file added to a table's folder is read as more rows of the table (every `*.parquet` there
is), one written over a partition's file replaces its rows while `status` still says fresh,
and neither is repaired by `ingest`. So before anything is written, the output path is resolved
(symlinks, `..`, relative to the working directory) and refused when it is the data dir, inside
one of the pipeline's folders of it, or one of its files. Anywhere else, the data dir's own
root included, is the user's.
"""

from __future__ import annotations

import stat
from pathlib import Path

from align_track_pipeline.core.analysis.connection import AnalysisError
from align_track_pipeline.core.guard import TREE_FILE
from align_track_pipeline.core.locations import fingerprint_cache_path

# Folders of the data dir, each with what it holds: every file in them is the pipeline's.
OWNED_DIRS = {
    "parquet": "the Parquet tables' folder (every file there is read as table rows)",
    "analysis": "the analysis folder (the comparison file and dashboard the pipeline rebuilds)",
    "archive": "the archive of removed partitions' table files",
    "state": "the pipeline's state folder (fingerprint cache, row counts, repairs)",
    "dagster": "the Dagster instance's folder",
    "aim": "the Aim repo",
    "mlflow-artifacts": "the MLflow artifact store",
}
# Files in the data dir's root, each with what it is.
OWNED_FILES = {
    "mlflow.db": "the MLflow store",
    "mlflow.db-wal": "the MLflow store's write-ahead log",
    "mlflow.db-shm": "the MLflow store's shared memory file",
    "mlflow.db-journal": "the MLflow store's journal",
    "mlflow.lock": "the MLflow store's lock",
    TREE_FILE: "the record of the tree the data dir was built from",
}
_SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")


def owner_of(data_dir: Path, output: Path) -> str | None:
    """What of the pipeline's `output` is or is inside (after resolving it), or None when the
    path is the user's."""
    data = Path(data_dir).resolve()
    target = Path(output).resolve()
    cache = fingerprint_cache_path(data).resolve()  # elsewhere on a network data dir
    if target in {cache.with_name(cache.name + s) for s in _SQLITE_SIDE_FILES}:
        return f"{cache}, the fingerprint cache"
    if target == data:
        return "the data dir itself"
    if not target.is_relative_to(data):
        return None
    first = target.relative_to(data).parts[0]
    if first in OWNED_DIRS:
        return f"inside {data / first}, {OWNED_DIRS[first]}"
    if first in OWNED_FILES and target.parent == data:
        return f"{data / first}, {OWNED_FILES[first]}"
    return None


def refuse_output(data_dir: Path, output: Path, option: str = "-o") -> None:
    """Raise AnalysisError, saying why, when `output` is a file the pipeline owns (`owner_of`)
    or a special file (a FIFO, a device: moving the output over it would replace it with a
    file, and its reader would get nothing); call it before writing anything."""
    if (owner := owner_of(data_dir, output)) is not None:
        resolved = Path(output).resolve()
        shown = (str(output) if Path(output) == resolved
                 else f"{output} (resolves to {resolved})")
        raise AnalysisError(f"refusing to write {option} {shown}: it is {owner}, which the "
                            "pipeline owns; nothing was written. Choose a path outside the "
                            "pipeline's folders and files (the data dir's own root is fine)")
    if (kind := _special(Path(output))) is not None:
        raise AnalysisError(f"refusing to write {option} {output}: it is {kind}, not a file; "
                            "nothing was written. Give a file name (`export -o -` writes the "
                            "rows to stdout, for a pipe)")


def _special(path: Path) -> str | None:
    """What `path` is when it exists and is neither a regular file nor a folder."""
    try:
        mode = path.stat().st_mode
    except OSError:  # missing (or not to be looked at: writing it says why)
        return None
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), None)
