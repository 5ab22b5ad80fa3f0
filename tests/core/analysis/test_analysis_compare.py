"""`compare` and the comparison file against the tables read independently with pyarrow."""

from __future__ import annotations

import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from align_track_pipeline.core.analysis.columns import map_columns
from align_track_pipeline.core.analysis.compare import (
    COMPARE_COLUMNS,
    FILE_COLUMNS,
    compare,
    write_comparison,
)
from align_track_pipeline.core.analysis.connection import open_tables
from align_track_pipeline.core.analysis.filters import Filters
from align_track_pipeline.core.analysis.render import by_scene, side_by_side
from align_track_pipeline.core.analysis.search import search
from align_track_pipeline.core.analysis.snapshot import COMPARISON_FILE, comparison_is_current
from align_track_pipeline.core.schema import TABLES
from align_track_pipeline.core.tables.store import ParquetStore
from tests.core.analysis.expected import by_key, comparison_rows, table_rows


def test_one_scenario_side_by_side_matches_the_tables(tables_dir):
    rows = compare(tables_dir, "DryRunEval.MJ1")
    assert rows == comparison_rows(tables_dir, "DryRunEval.MJ1")
    runs = {(r["partition_key"], r["alignment_target_id"]) for r in rows}
    assert len(runs) > 10  # the question the command answers: many runs, one scenario


def test_one_scene(tables_dir):
    rows = compare(tables_dir, "DryRunEval.MJ1", "P3")
    assert rows and rows == comparison_rows(tables_dir, "DryRunEval.MJ1", "P3")
    header, fields = side_by_side(rows)
    assert header[1:] == [r["experiment_path"] for r in rows]
    decisions = next(f for f in fields if f[0] == "decision")
    assert decisions[1:] == [r["decision_text"] for r in rows]


def test_an_unknown_scenario_is_an_empty_answer(tables_dir):
    assert compare(tables_dir, "no-such-scenario") == []


def test_the_comparison_file_holds_every_scenario(tables_dir, tmp_path):
    result = write_comparison(tables_dir, tmp_path / "analysis" / "scene_comparison.parquet")
    expected = comparison_rows(tables_dir)
    written = pq.read_table(result.path).to_pylist()
    assert [list(r) for r in written[:1]] == [FILE_COLUMNS]  # then the other scenes columns
    maps = {*map_columns("scenes"), "kdma_values"}
    assert [{k: dict(r[k]) if k in maps and r[k] is not None else r[k]
             for k in COMPARE_COLUMNS} for r in written] == expected
    assert result.rows == len(expected)
    assert result.runs == len({(r["partition_key"], r["alignment_target_id"])
                               for r in expected})
    assert result.scenarios == len({r["scenario_id"] for r in expected})
    runs_per_scenario = Counter(s for s, _ in {(r["scenario_id"], (r["partition_key"],
                                                r["alignment_target_id"])) for r in expected})
    most = max(runs_per_scenario.values())
    assert runs_per_scenario[result.preview[0]["scenario_id"]] == most
    assert len(by_scene(result.preview)) == 1
    assert [p for p in tmp_path.rglob("*") if p.name.startswith(".")] == []  # no temp file


def _scenes_answers(data) -> None:
    """compare, search and a pivot on scenes give the tables' answers."""
    assert compare(data, "DryRunEval.MJ1") == comparison_rows(data, "DryRunEval.MJ1")
    assert compare(data, "DryRunEval.MJ1", "P2") == comparison_rows(data, "DryRunEval.MJ1", "P2")
    found = search(open_tables(data, ["scenes"]), "scenes", Filters(adm="pipeline_*"), None)
    assert by_key(found.rows) == by_key([r for r in table_rows(data, "scenes")
                                         if r["adm"].startswith("pipeline_")])


def test_scenes_queries_read_the_comparison_file_only_while_it_is_current(tables_dir,
                                                                          tmp_path):
    shutil.copytree(tables_dir / "parquet", tmp_path / "parquet")
    assert not comparison_is_current(tmp_path)
    _scenes_answers(tmp_path)
    write_comparison(tmp_path, tmp_path / COMPARISON_FILE)
    assert comparison_is_current(tmp_path)
    _scenes_answers(tmp_path)
    store = ParquetStore(tmp_path)  # one partition re-ingested with a new decision
    key = "random/unaligned"
    scenes = store.read("scenes", key)
    changed = scenes.set_column(scenes.schema.get_field_index("decision_text"),
                                "decision_text", pa.array(["changed"] * scenes.num_rows))
    store.write("scenes", key, changed)
    assert not comparison_is_current(tmp_path)
    _scenes_answers(tmp_path)
    rows = compare(tmp_path, "DryRunEval.MJ1")
    assert {r["decision_text"] for r in rows if r["partition_key"] == key} == {"changed"}


def test_compare_columns_come_from_the_tables():
    names = set(TABLES["scenes"].names) | {"kdma_values"}
    assert set(COMPARE_COLUMNS) <= names and "kdma_values" in TABLES["experiments"].names
