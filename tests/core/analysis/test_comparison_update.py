"""The comparison file updated from its previous version and the changed partitions only:
the rows a rebuild from every partition file writes, or a rebuild when the previous file
cannot be trusted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from align_track_pipeline.core.analysis.compare import write_comparison
from align_track_pipeline.core.analysis.incremental import MAX_CHANGED_SHARE, listing_path
from align_track_pipeline.core.analysis.snapshot import (
    COMPARISON_FILE,
    FINGERPRINT_KEY,
    comparison_is_current,
    tables_fingerprint,
)
from align_track_pipeline.core.schema import TABLES
from align_track_pipeline.core.tables.store import ParquetStore

CHANGED, REMOVED = "random/unaligned", "pipeline_kaleido/moral_judgement-0.2"


@pytest.fixture
def data(tables_dir, tmp_path) -> Path:
    """A private copy of the sample tables with a comparison file built from them all."""
    data = tmp_path / "data"
    shutil.copytree(tables_dir / "parquet", data / "parquet")
    assert write_comparison(data, data / COMPARISON_FILE).changed_files is None
    return data


def _rebuilt(data: Path, where: Path) -> Path:
    """The file a rebuild writes from a copy of `data`'s tables (no previous file)."""
    shutil.copytree(data / "parquet", where / "parquet")
    assert write_comparison(where, where / COMPARISON_FILE).changed_files is None
    return where / COMPARISON_FILE


def _same_file(updated: Path, rebuilt: Path) -> None:
    """Row for row, column for column and type for type the same."""
    a, b = pq.read_table(updated), pq.read_table(rebuilt)
    assert a.schema.remove_metadata() == b.schema.remove_metadata()
    assert a.num_rows == b.num_rows > 0
    assert a.to_pylist() == b.to_pylist()


def _change_add_remove(data: Path) -> None:
    """One partition's decisions rewritten, one partition added, one removed."""
    store = ParquetStore(data)
    keys = [r["partition_key"] for r in pq.read_table(
        store.table_dir("experiments"), columns=["partition_key"]).to_pylist()]
    assert CHANGED in keys and REMOVED in keys
    scenes = store.read("scenes", CHANGED)
    store.write("scenes", CHANGED, scenes.set_column(
        scenes.schema.get_field_index("decision_text"), "decision_text",
        pa.array([f"changed {i}" for i in range(scenes.num_rows)])))
    added = "zz_added/copy"  # sorts after every key; its scenes interleave with every scenario
    for table in TABLES:
        rows = store.read(table, CHANGED)
        for column in ("partition_key", "experiment_path"):
            rows = rows.set_column(rows.schema.get_field_index(column), column,
                                   pa.array([added] * rows.num_rows))
        store.write(table, added, rows)
        store.path(table, REMOVED).unlink()


def test_a_change_an_addition_and_a_removal_give_the_rebuilds_file(data, tmp_path):
    _change_add_remove(data)
    updated = write_comparison(data, data / COMPARISON_FILE)
    assert updated.changed_files == 3
    assert comparison_is_current(data)
    _same_file(updated.path, _rebuilt(data, tmp_path / "rebuilt"))
    decisions = {r["decision_text"] for r in pq.read_table(updated.path).to_pylist()
                 if r["partition_key"] == CHANGED}
    assert decisions and all(d.startswith("changed ") for d in decisions)
    assert [p.name for p in (data / "analysis").iterdir()
            if p.name.startswith(".") and p.name != ".duckdb-tmp"] == []


def test_updates_in_a_row_stay_the_rebuilds_file(data, tmp_path):
    _change_add_remove(data)
    write_comparison(data, data / COMPARISON_FILE)
    store = ParquetStore(data)
    for table in TABLES:  # the added partition removed again
        store.path(table, "zz_added/copy").unlink()
    again = write_comparison(data, data / COMPARISON_FILE)
    assert again.changed_files == 1
    _same_file(again.path, _rebuilt(data, tmp_path / "rebuilt"))


def test_the_unchanged_partition_files_are_not_read(data):
    """An unchanged partition's file garbled in place with its size and times kept: the
    update does not open it (a rebuild would fail on it)."""
    store = ParquetStore(data)
    victim = store.path("scenes", "pipeline_prompt_based/moral_judgement-0.2")
    stat = victim.stat()
    with victim.open("r+b") as f:
        f.write(b"\0" * stat.st_size)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    scenes = store.read("scenes", CHANGED)
    store.write("scenes", CHANGED, scenes)
    assert write_comparison(data, data / COMPARISON_FILE).changed_files == 1


def _wrong_layout(path: Path) -> None:
    recorded = json.loads(path.read_text())
    path.write_text(json.dumps(recorded | {"layout": "an older layout"}))


def _listing_of_another_file(path: Path) -> None:
    recorded = json.loads(path.read_text())
    recorded["tables"]["scenes"] = recorded["tables"]["scenes"][1:]
    path.write_text(json.dumps(recorded))


@pytest.mark.parametrize("spoil", [
    lambda data: listing_path(data / COMPARISON_FILE).unlink(),
    lambda data: _wrong_layout(listing_path(data / COMPARISON_FILE)),
    lambda data: _listing_of_another_file(listing_path(data / COMPARISON_FILE)),
    lambda data: listing_path(data / COMPARISON_FILE).write_text("{not json"),
    lambda data: (data / COMPARISON_FILE).write_bytes(b"not parquet"),
    lambda data: (data / COMPARISON_FILE).unlink(),
    lambda data: pq.write_table(pq.read_table(data / COMPARISON_FILE).drop_columns(
        ["item_json"]), data / COMPARISON_FILE),  # a file of an older layout
], ids=["no listing", "other layout", "listing of another file", "unreadable listing",
        "unreadable file", "no file", "older columns"])
def test_a_previous_file_that_cannot_be_trusted_is_rebuilt(data, tmp_path, spoil):
    _change_add_remove(data)
    spoil(data)
    result = write_comparison(data, data / COMPARISON_FILE)
    assert result.changed_files is None
    _same_file(result.path, _rebuilt(data, tmp_path / "rebuilt"))
    metadata = pq.read_schema(result.path).metadata
    assert metadata[FINGERPRINT_KEY.encode()] == tables_fingerprint(data).encode()
    assert write_comparison(data, data / COMPARISON_FILE).changed_files == 0  # trusted again


@pytest.mark.parametrize("over", [0, 1], ids=["a quarter changed: updated",
                                             "one more: rebuilt"])
def test_more_than_a_quarter_of_the_partition_files_changed_is_rebuilt(data, tmp_path, over):
    """Up to `MAX_CHANGED_SHARE` of the partition files changed, the previous file is updated
    (it reports the files it read); one more, and it is rebuilt from all of them (a rebuild
    costs no more then). The rows are the rebuild's either way."""
    store = ParquetStore(data)
    keys = sorted({r["partition_key"] for r in pq.read_table(
        store.table_dir("experiments"), columns=["partition_key"]).to_pylist()})
    quarter = int(MAX_CHANGED_SHARE * len(keys))
    assert (len(keys), quarter) == (20, 5)
    for key in keys[:quarter + over]:  # rewritten: a new file, the same rows
        store.write("scenes", key, store.read("scenes", key))
    result = write_comparison(data, data / COMPARISON_FILE)
    assert result.changed_files == (None if over else quarter)
    _same_file(result.path, _rebuilt(data, tmp_path / "rebuilt"))
