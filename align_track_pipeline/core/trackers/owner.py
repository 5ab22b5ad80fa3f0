"""Which tree a store's runs come from.

Runs are keyed by their folder's path in the tree, so two trees written into one store (an
`MLFLOW_TRACKING_URI` exported in the shell and used by two data dirs, one Aim repo named for
both) share keys: one tree's ingest would replace the other's runs of the same path, and its
removals would delete them, while the other data dir still says fresh. So a store is marked
with the tree it holds when a writer first opens it, and a writer of another tree is refused
before it writes. Data dirs of the same tree (several hosts, several instances) share a store
as before; a data dir moved to a new tree (`--new-tree`) takes its store along.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from align_track_pipeline.core.guard import Refusal, earlier_trees, remembered_tree
from align_track_pipeline.core.trackers.base import TargetError

OWNER = "align_track.tree"  # the MLflow experiment tag; the Aim repo's file `OWNER_FILE`
OWNER_FILE = "align_track_tree"


class OtherTreesStore(TargetError):
    """The store holds the runs of another tree than the data dir's."""


def claimed(marked: str | None, data_dir: str | None, store: str, fix: str) -> str | None:
    """The mark to write on the store (None: it stands); raises `OtherTreesStore` when the
    store holds another tree's runs. A data dir that remembers no tree (yet) claims nothing."""
    try:
        tree = remembered_tree(Path(data_dir)) if data_dir else None
    except Refusal:  # an unreadable record: the commands' own checks report it
        tree = None
    if tree is None or marked == tree:
        return None
    if marked is None or marked in earlier_trees(Path(data_dir)):
        return tree
    raise OtherTreesStore(
        f"{store} holds the runs of the tree {marked}, not of this data dir's tree {tree}: "
        "its runs of the same folder names would replace those, and its removals delete "
        f"them. Nothing was written. {fix}")


def claim(read: Callable[[], str | None], write: Callable[[str], None],
          lock: Callable[[], AbstractContextManager], data_dir: str | None, store: str,
          fix: str, refused: tuple[type[Exception], ...] = ()) -> None:
    """Mark a store (`read` its mark, `write` one) with the data dir's tree, or refuse another
    tree's. An unmarked store is marked under `lock`, so that of two first writers one marks
    and the other reads; a store whose `write` raises one of `refused` (a tracking server,
    which takes no lock, refuses a second insert) is read again: a mark of this tree stands."""
    if claimed(read(), data_dir, store, fix) is None:
        return
    with lock():
        mark = claimed(read(), data_dir, store, fix)
        if mark is None:
            return
        try:
            write(mark)
        except refused:
            if claimed(read(), data_dir, store, fix) is not None:
                raise
