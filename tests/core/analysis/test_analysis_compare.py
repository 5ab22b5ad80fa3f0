"""`compare` and the comparison file against the tables read independently with pyarrow."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

from align_track_pipeline.core.analysis.columns import map_columns
from align_track_pipeline.core.analysis.compare import COMPARE_COLUMNS, compare, write_comparison
from align_track_pipeline.core.analysis.connection import open_tables
from align_track_pipeline.core.analysis.render import by_scene, side_by_side
from align_track_pipeline.core.tables.schema import TABLES
from tests.core.analysis.expected import comparison_rows


def test_one_scenario_side_by_side_matches_the_tables(tables_dir):
    rows = compare(open_tables(tables_dir), tables_dir, "DryRunEval.MJ1")
    assert rows == comparison_rows(tables_dir, "DryRunEval.MJ1")
    runs = {(r["partition_key"], r["alignment_target_id"]) for r in rows}
    assert len(runs) > 10  # the question the command answers: many runs, one scenario


def test_one_scene(tables_dir):
    rows = compare(open_tables(tables_dir), tables_dir, "DryRunEval.MJ1", "P3")
    assert rows and rows == comparison_rows(tables_dir, "DryRunEval.MJ1", "P3")
    header, fields = side_by_side(rows)
    assert header[1:] == [r["experiment_path"] for r in rows]
    decisions = next(f for f in fields if f[0] == "decision")
    assert decisions[1:] == [r["decision_text"] for r in rows]


def test_an_unknown_scenario_is_an_empty_answer(tables_dir):
    assert compare(open_tables(tables_dir), tables_dir, "no-such-scenario") == []


def test_the_comparison_file_holds_every_scenario(tables_dir, tmp_path):
    result = write_comparison(tables_dir, tmp_path / "analysis" / "scene_comparison.parquet")
    expected = comparison_rows(tables_dir)
    written = pq.read_table(result.path).to_pylist()
    assert [list(r) for r in written[:1]] == [COMPARE_COLUMNS]
    maps = {*map_columns("scenes"), "kdma_values"}
    assert [{k: dict(v) if k in maps and v is not None else v for k, v in r.items()}
            for r in written] == expected
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


def test_compare_columns_come_from_the_tables():
    names = set(TABLES["scenes"].names) | {"kdma_values"}
    assert set(COMPARE_COLUMNS) <= names and "kdma_values" in TABLES["experiments"].names
