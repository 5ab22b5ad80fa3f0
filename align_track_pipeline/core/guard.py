"""What keeps an ordinary mistake from wiping the stores: a data dir remembers the tree it was
built from, and a pass that would remove much of what it holds removes nothing.

An unmounted share reads as an empty folder, a forgotten `--experiments-dir` points at the
bundled sample, a typo points elsewhere: each would otherwise make every partition look removed,
and removal deletes Parquet files, MLflow runs and Aim runs. So:

- another tree than the remembered one is refused (`OtherTree`) unless the user says so;
- a data dir inside the tree, where the scan would read it, is refused (`check_apart`);
- a pass that would remove more than `MAX_SHARE` of the partitions and more than `ALWAYS_OK`
  of them, or any pass over a tree with no run directory left, is refused
  (`TooManyRemovals`) unless the user confirms;
- partitions at or below a folder that cannot be read are never taken as removed (`Scan`);
- a data dir starts remembering a tree once a pass over it goes ahead, before its first write
  (a pass cut short still leaves it remembered), and never an empty one (`EmptyTree`).

Plain Python: the CLI refuses with exit 2, the daemon's sensor logs and skips the removals.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from align_track_pipeline.core.atomic import write_text_atomically
from align_track_pipeline.core.source.discovery import Scan, rel_path_of, skipped

TREE_FILE = "tree.json"
MAX_SHARE = 0.2  # a pass may remove at most this share of the partitions ...
ALWAYS_OK = 5  # ... unless it removes this many or fewer
CONFIRM_FLAG = "--confirm-removals"
NEW_TREE_FLAG = "--new-tree"


class Refusal(Exception):
    """An action the user must confirm; the message says what and how."""


class OtherTree(Refusal):
    pass


class TooManyRemovals(Refusal):
    pass


class EmptyTree(Refusal):
    pass


def tree_file(data_dir: Path) -> Path:
    return Path(data_dir) / TREE_FILE


def remembered_tree(data_dir: Path) -> str | None:
    """The tree root the data dir was built from, or None for a new (or older) data dir."""
    try:
        return json.loads(tree_file(data_dir).read_text())["experiments_dir"]
    except (FileNotFoundError, NotADirectoryError):  # not yet, or no data dir at all
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Refusal(f"cannot read {tree_file(data_dir)} (the tree this data dir was built "
                      f"from): {exc}; fix or delete it") from exc


def earlier_trees(data_dir: Path) -> list[str]:
    """The trees the data dir was built from before its current one (`--new-tree`): its
    stores' runs may still be marked with them (`trackers.owner`)."""
    try:
        earlier = json.loads(tree_file(data_dir).read_text()).get("earlier", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [t for t in earlier if isinstance(t, str)] if isinstance(earlier, list) else []


def remember_tree(data_dir: Path, root: Path) -> None:
    """Record `root` as the data dir's tree (written whole, never half), if it is not yet;
    the tree it replaces joins the earlier ones."""
    known = remembered_tree(data_dir)
    if known == str(root):
        return
    earlier = [t for t in [*earlier_trees(data_dir), known] if t and t != str(root)]
    record = {"experiments_dir": str(root), **({"earlier": earlier} if earlier else {})}
    write_text_atomically(tree_file(data_dir), json.dumps(record) + "\n")


def check_apart(data_dir: Path, root: Path) -> None:
    """Refuse a data dir inside the tree (both resolved) where the scan would read it: each
    pass would take the data dir's own files for run folders (its MLflow artifacts hold
    copies of them) and grow with its own output. Below a folder the scan skips (`.name`,
    OUTDATED) it is never read."""
    if data_dir != root and not data_dir.is_relative_to(root):
        return
    if any(skipped(part) for part in data_dir.relative_to(root).parts):
        return
    raise Refusal(f"the data dir {data_dir} is inside the tree {root}: its own files (the "
                  "MLflow artifacts copy each run folder's files) would be ingested as run "
                  "folders. Nothing was changed; give a --data-dir outside the tree")


def check_tree(data_dir: Path, root: Path, new_tree: bool = False) -> None:
    """Refuse a tree other than the one the data dir remembers, unless `new_tree`. Nothing is
    recorded here: `remember_tree` once the pass is known to go ahead, so a refused pass on a
    data dir that remembers no tree yet leaves it remembering none."""
    known = remembered_tree(data_dir)
    if known is not None and known != str(root) and not new_tree:
        raise OtherTree(
            f"the data dir {data_dir} was built from the tree {known}, not {root}: nothing "
            f"was changed. Pass --experiments-dir {known}, or {NEW_TREE_FLAG} to make {root} "
            "its tree from now on (its partitions missing from the new tree are then removed, "
            "within the removal bound)")


@dataclass(frozen=True)
class Removals:
    """Known partitions whose folder is gone, and those that could not be seen (key ->
    reason): the hidden ones are kept, and fail until their folder can be read again."""

    gone: list[str]
    hidden: dict[str, str]


def removals(known: Iterable[str], scan: Scan) -> Removals:
    on_disk = {r.key for r in scan.run_dirs}
    gone, hidden = [], {}
    for key in sorted(set(known) - on_disk):
        reason = scan.hidden(rel_path_of(key))
        if reason:
            hidden[key] = reason
        else:
            gone.append(key)
    return Removals(gone, hidden)


def removal_refusal(root: Path, known: int, gone: list[str], found: int) -> str | None:
    """Why removing `gone` (of `known` partitions, with `found` run dirs in the tree) needs a
    confirmation, or None when it is within the bound."""
    if not gone:
        return None
    examples = ", ".join(gone[:3]) + (", ..." if len(gone) > 3 else "")
    if found == 0:
        why = (f"the tree {root} holds no run directory (an unmounted share looks like "
               f"this), so all {known} partitions would be removed ({examples})")
    elif len(gone) > ALWAYS_OK and len(gone) > MAX_SHARE * known:
        why = (f"{len(gone)} of {known} partitions are no longer in the tree {root} "
               f"({examples}): more than {MAX_SHARE:.0%} and more than {ALWAYS_OK}")
    else:
        return None
    return (f"{why}. Nothing was removed. If these folders are really gone, run "
            f"`align-track ingest {CONFIRM_FLAG}` with the same --experiments-dir and "
            "--data-dir to remove them and their runs")


def check_first_tree(root: Path, known: int, found: int, unreadable: dict[str, str]) -> None:
    """Refuse a first pass over a tree that holds no run directory it can read: the data dir
    would remember it (`remember_tree`) and refuse the tree that was meant."""
    if known or found:
        return
    if unreadable:
        shown = "; ".join(list(unreadable.values())[:3]) + ("; ..." if len(unreadable) > 3
                                                           else "")
        raise EmptyTree(f"the tree {root} holds no run directory that can be read ({shown}): "
                        "nothing was ingested")
    raise EmptyTree(f"the tree {root} holds no run directory (no folder below it holds "
                    "input_output.json; an unmounted share looks like this): nothing was "
                    "ingested")


def check_removals(root: Path, known: int, gone: list[str], found: int,
                   confirmed: bool = False) -> None:
    """Raise `TooManyRemovals` when removing `gone` needs a confirmation it does not have."""
    refusal = removal_refusal(root, known, gone, found)
    if refusal and not confirmed:
        raise TooManyRemovals(refusal)
