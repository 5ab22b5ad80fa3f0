"""The guards against wiping the stores by mistake: unreadable folders, the remembered tree and
the removal bound (plain Python, no Dagster)."""

import json
import shutil
import subprocess
import sys

import pytest

from align_track_pipeline.core.guard import (
    OtherTree,
    Refusal,
    TooManyRemovals,
    check_apart,
    check_removals,
    check_tree,
    remember_tree,
    remembered_tree,
    removal_refusal,
    removals,
)
from align_track_pipeline.core.source.discovery import Scan, TreeUnreadable, scan_tree
from tests.conftest import make_run_dir, without_read_override

SCAN = """
import json, sys
from align_track_pipeline.core.source.discovery import scan_tree
scan = scan_tree(sys.argv[1])
print(json.dumps({"found": [r.rel_path for r in scan.run_dirs], "unreadable": scan.unreadable}))
"""


def _scan_without_read_override(root) -> dict:
    out = subprocess.run(without_read_override([sys.executable, "-c", SCAN, str(root)]),
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def test_an_unreadable_folder_is_named_with_the_reason_not_skipped(tmp_path):
    for rel in ("a/run1", "a/run2", "b/run"):
        make_run_dir(tmp_path, rel)
    (tmp_path / "a").chmod(0)
    try:
        seen = _scan_without_read_override(tmp_path)
    finally:
        (tmp_path / "a").chmod(0o755)
    assert seen["found"] == ["b/run"]
    assert list(seen["unreadable"]) == ["a"]
    assert "Permission denied" in seen["unreadable"]["a"] and str(tmp_path / "a") in \
        seen["unreadable"]["a"]


def test_partitions_below_an_unreadable_folder_are_hidden_not_gone(tmp_path):
    scan = Scan([], {"a": "cannot read folder /t/a: Permission denied"})
    plan = removals(["a/run1", "a/run2", "ab/run", "b/run"], scan)
    assert plan.gone == ["ab/run", "b/run"]
    assert plan.hidden == {"a/run1": scan.unreadable["a"], "a/run2": scan.unreadable["a"]}


def test_a_missing_or_unreadable_root_raises(tmp_path):
    with pytest.raises(TreeUnreadable, match="not found or not readable"):
        scan_tree(tmp_path / "missing")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree").chmod(0)
    try:
        out = subprocess.run(without_read_override([sys.executable, "-c", SCAN,
                                                    str(tmp_path / "tree")]),
                             capture_output=True, text=True, timeout=120)
    finally:
        (tmp_path / "tree").chmod(0o755)
    assert out.returncode != 0 and "TreeUnreadable" in out.stderr


@pytest.mark.parametrize(("known", "gone", "found", "refused"), [
    (10, 5, 5, False),    # 5 is always allowed
    (10, 6, 4, True),     # more than 5 and more than 20%
    (40, 6, 34, False),   # more than 5, but only 15%
    (40, 9, 31, True),    # 22.5%
    (2, 2, 0, True),      # an empty tree never removes everything
    (3, 0, 0, False),     # nothing to remove
])
def test_the_removal_bound(tmp_path, known, gone, found, refused):
    keys = [f"p{n}" for n in range(gone)]
    assert (removal_refusal(tmp_path, known, keys, found) is not None) == refused
    if refused:
        with pytest.raises(TooManyRemovals, match="--confirm-removals"):
            check_removals(tmp_path, known, keys, found)
        check_removals(tmp_path, known, keys, found, confirmed=True)


def test_a_data_dir_refuses_another_tree_unless_told(tmp_path):
    data, first, other = tmp_path / "data", tmp_path / "t1", tmp_path / "t2"
    check_tree(data, first)  # nothing remembered: any tree, and nothing written yet
    assert remembered_tree(data) is None
    remember_tree(data, first)
    assert remembered_tree(data) == str(first)
    check_tree(data, first)
    with pytest.raises(OtherTree) as refused:
        check_tree(data, other)
    assert str(first) in str(refused.value) and str(other) in str(refused.value)
    assert "--new-tree" in str(refused.value)
    check_tree(data, other, new_tree=True)
    remember_tree(data, other)
    assert remembered_tree(data) == str(other)


def test_an_unreadable_tree_record_is_reported_not_ignored(tmp_path):
    (tmp_path / "tree.json").write_text("{not json")
    with pytest.raises(Refusal, match="tree.json"):
        check_tree(tmp_path, tmp_path / "t")


def test_a_symlink_to_a_missing_folder_hides_what_was_below_it(tmp_path):
    """A link inside the tree to a folder that is gone now (e.g. a mount point's subfolder,
    with the share not mounted): its partitions are not taken as removed. (The folder is
    below one the scan skips, so the link is the only way to it and names its partitions.)"""
    tree = tmp_path / "tree"
    make_run_dir(tree, ".mnt/share/run")
    make_run_dir(tree, "local/run")
    (tree / "alias").symlink_to(tree / ".mnt" / "share")
    (tree / "elsewhere").symlink_to(tmp_path / "missing-outside")  # never followed, kept
    assert [r.rel_path for r in scan_tree(tree).run_dirs] == ["alias/run", "local/run"]
    shutil.rmtree(tree / ".mnt" / "share")
    scan = scan_tree(tree)
    assert [r.rel_path for r in scan.run_dirs] == ["local/run"]
    assert sorted(scan.unreadable) == ["alias", "elsewhere"]
    assert "No such file" in scan.unreadable["alias"]
    plan = removals(["alias/run", "elsewhere/run", "local/run", "gone/run"], scan)
    assert plan.gone == ["gone/run"] and sorted(plan.hidden) == ["alias/run", "elsewhere/run"]


def test_a_data_dir_is_refused_inside_the_tree_only_where_the_scan_reads(tmp_path):
    tree = tmp_path / "tree"
    check_apart(tmp_path / "data", tree)
    check_apart(tree / ".align-track", tree)  # hidden folders are never scanned
    check_apart(tree / "old_OUTDATED" / "data", tree)
    with pytest.raises(Refusal, match="is inside the tree"):
        check_apart(tree / "results" / "data", tree)
    with pytest.raises(Refusal, match="is inside the tree"):
        check_apart(tree, tree)
