import os
from pathlib import Path

import dagster as dg
import pytest

from align_track_pipeline.core.source.discovery import (
    FingerprintCache,
    RunDir,
    find_run_dirs,
    partition_key,
    rel_path_of,
    scan_tree,
    stat_signature,
)
from tests.conftest import SAMPLE_TREE, make_run_dir

WEIRD_NAMES = [
    "plain/affiliation-0.5",
    "with space/ünïcödé 名前",
    "dots.../a..b/c.d",
    "comma,name/100%",
    "tab\tand\nnewline",
    "_leading_underscore",
]


def test_finds_every_run_dir_and_skips_outdated():
    found = {r.rel_path for r in find_run_dirs(SAMPLE_TREE)}
    on_disk = {
        p.parent.relative_to(SAMPLE_TREE).as_posix()
        for p in SAMPLE_TREE.rglob("input_output.json")
    }
    outdated = {p for p in on_disk if "outdated" in p.lower()}
    assert outdated, "the sample tree should hold an OUTDATED run dir"
    assert found == on_disk - outdated


def test_root_itself_can_be_a_run_dir(tmp_path):
    make_run_dir(tmp_path, ".")
    make_run_dir(tmp_path, "nested/run")
    assert [r.rel_path for r in find_run_dirs(tmp_path)] == [".", "nested/run"]
    assert find_run_dirs(tmp_path)[0].key == "."


@pytest.mark.parametrize("rel", WEIRD_NAMES)
def test_partition_keys_are_reversible(rel):
    assert rel_path_of(partition_key(rel)) == rel


def test_partition_keys_are_accepted_by_dagster(tmp_path, dagster_storage):
    keys = [partition_key(rel) for rel in WEIRD_NAMES]
    assert all("..." not in k and "," not in k and "\n" not in k for k in keys)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("experiments", keys)  # raises on an invalid key
        assert set(instance.get_dynamic_partitions("experiments")) == set(keys)


def test_symlink_loop_terminates_and_does_not_duplicate(tmp_path):
    make_run_dir(tmp_path, "a/run")
    os.symlink(tmp_path / "a", tmp_path / "a" / "run" / "loop")
    os.symlink(tmp_path / "a", tmp_path / "alias")
    assert [r.rel_path for r in find_run_dirs(tmp_path)] == ["a/run"]


def test_an_alias_in_the_tree_never_names_its_folders_partition(tmp_path):
    """`a_latest` -> `z_exp/run` sorts first, yet the folder keeps its own name, also when the
    link is re-pointed; a folder reached only through a link (below a skipped one) is found
    under the link's name."""
    for rel in ("z_exp/run", "z_exp/run2", ".store/kept"):
        make_run_dir(tmp_path, rel)
    os.symlink(tmp_path / "z_exp" / "run", tmp_path / "a_latest")
    os.symlink(tmp_path / "z_exp", tmp_path / "b_all")
    os.symlink(tmp_path / ".store" / "kept", tmp_path / "c_kept")
    assert [r.rel_path for r in find_run_dirs(tmp_path)] == ["c_kept", "z_exp/run",
                                                             "z_exp/run2"]
    (tmp_path / "a_latest").unlink()
    os.symlink(tmp_path / "z_exp" / "run2", tmp_path / "a_latest")
    assert [r.rel_path for r in find_run_dirs(tmp_path)] == ["c_kept", "z_exp/run",
                                                             "z_exp/run2"]


def test_symlink_leaving_the_tree_is_not_followed(tmp_path):
    outside = tmp_path / "outside"
    make_run_dir(outside, "secret_run")
    tree = tmp_path / "tree"
    make_run_dir(tree, "inside")
    os.symlink(outside, tree / "escape")
    os.symlink(tmp_path / "unmounted", tree / "gone")  # dangling, out of the tree
    scan = scan_tree(tree)
    assert [r.rel_path for r in scan.run_dirs] == ["inside"]
    assert scan.unreadable["escape"].startswith(f"{tree / 'escape'} leads out of the tree")
    assert scan.unreadable["gone"].startswith(f"cannot read {tree / 'gone'}")
    assert scan.hidden("escape/secret_run") and scan.hidden("gone/run")  # kept, not removed


def _versions(tree: Path, cache_path: Path) -> dict[str, str]:
    cache = FingerprintCache(cache_path)
    try:
        return cache.versions(find_run_dirs(tree))
    finally:
        cache.close()


def test_touch_keeps_the_version_and_a_content_change_changes_it(tmp_path):
    run = make_run_dir(tmp_path / "tree", "exp/run")
    cache = tmp_path / "fp.sqlite"
    first = _versions(tmp_path / "tree", cache)
    os.utime(run / "input_output.json")  # touched: stat changes, bytes do not
    assert _versions(tmp_path / "tree", cache) == first
    (run / "timing.json").write_text('{"total_time_s": 1.0}')
    assert _versions(tmp_path / "tree", cache)["exp/run"] != first["exp/run"]


def test_unchanged_stat_data_skips_hashing(tmp_path):
    """Same size and mtime: the cached version is reused without reading the file."""
    run = make_run_dir(tmp_path / "tree", "exp/run")
    cache = tmp_path / "fp.sqlite"
    first = _versions(tmp_path / "tree", cache)
    path = run / "input_output.json"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-2:-1] = b" "  # same length, different bytes
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_ino == st.st_ino and path.stat().st_size == st.st_size
    assert _versions(tmp_path / "tree", cache) == first


def test_irrelevant_files_do_not_change_the_version(tmp_path):
    run = make_run_dir(tmp_path / "tree", "exp/run")
    cache = tmp_path / "fp.sqlite"
    first = _versions(tmp_path / "tree", cache)
    (run / "align_system.log").write_text("log line\n")
    (run / "DryRunEval.MJ1.target.final_state_unstructured.json").write_text("plain text")
    assert _versions(tmp_path / "tree", cache) == first


def test_a_scan_names_each_run_dirs_files_and_its_signature_is_the_full_one(tmp_path):
    """A tick stats only the source files the scan's listing holds: the signature must be the
    one a full look at the folder gives, whatever it holds (case of the names aside)."""
    tree = tmp_path / "tree"
    bare = make_run_dir(tree, "a/bare")
    full = make_run_dir(tree, "a/full")
    (full / "timing.json").write_text("{}")
    (full / "meta.json").write_text("{}")
    (full / ".hydra").mkdir()
    (full / ".hydra" / "config.yaml").write_text("adm: {}\n")
    (full / "targets").mkdir()
    (full / "targets" / "t.json").write_text("{}")
    (full / "scores.json").mkdir()  # a folder by a source file's name is not one
    scanned = {r.rel_path: r for r in scan_tree(tree).run_dirs}
    assert scanned["a/bare"].listing == {"input_output.json"}
    assert {".hydra", "targets", "meta.json"} <= scanned["a/full"].listing
    for rel, run in (("a/bare", bare), ("a/full", full)):
        assert stat_signature(run, scanned[rel].listing) == stat_signature(run)
        assert stat_signature(run) == stat_signature(RunDir(run, rel).path)
    assert len(stat_signature(full).split("|")) == 5  # input_output, timing, meta, config, t
    (bare / "scores.json").write_text("{}")  # added after the scan: the next scan sees it
    assert "scores.json" in stat_signature(bare, scan_tree(tree).run_dirs[0].listing)
