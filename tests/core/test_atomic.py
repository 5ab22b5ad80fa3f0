"""Files replaced whole (`core.atomic`): the state files, caches, generated configs and pages."""

import threading

import pytest

from align_track_pipeline.core.atomic import write_text_atomically


def test_a_file_is_created_with_its_folder_and_then_replaced_whole(tmp_path):
    path = tmp_path / "state" / "store_repairs.json"
    write_text_atomically(path, '{"a": 1}')
    write_text_atomically(path, '{"b": 2}')
    assert path.read_text() == '{"b": 2}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["store_repairs.json"]


def test_a_failed_replace_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "page.html"
    target.mkdir()  # a folder in the way: the rename fails
    (target / "kept").write_text("old")
    with pytest.raises(OSError):
        write_text_atomically(target, "<html>")
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]
    assert (target / "kept").read_text() == "old"


def test_writers_at_once_never_leave_a_mixed_or_half_file(tmp_path):
    """Each write has its own temporary file (before, two processes of one pid namespace or
    two threads shared `<name>.<pid>.tmp`): the file is always one writer's whole text."""
    path = tmp_path / "tree.json"
    texts = [str(n) * 200_000 for n in range(8)]
    errors = []

    def write(text: str) -> None:
        try:
            write_text_atomically(path, text)
        except OSError as exc:  # a shared temporary file renamed away by another writer
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert path.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["tree.json"]


def test_a_target_with_the_longest_name_a_file_can_have_is_written(tmp_path):
    path = tmp_path / ("x" * 250 + ".html")
    write_text_atomically(path, "<html>")
    assert path.read_text() == "<html>"
