"""`export`: every format holds exactly the filtered rows, read back independently."""

from __future__ import annotations

import csv
import json

import pyarrow.parquet as pq
import pytest

from align_track_pipeline.core.analysis.columns import map_columns, nested_columns
from align_track_pipeline.core.analysis.connection import AnalysisError
from align_track_pipeline.core.analysis.export import export, export_format
from align_track_pipeline.core.analysis.filters import Filters
from tests.core.analysis.expected import by_key, table_rows

ADM = "pipeline_baseline"


def _expected(data, table="scenes"):
    return by_key([r for r in table_rows(data, table) if r["adm"] == ADM])


@pytest.mark.parametrize("fmt", ["json", "jsonl", "parquet"])
def test_typed_formats_keep_every_value(tables_dir, tmp_path, fmt):
    path = tmp_path / f"out.{fmt}"
    count = export(tables_dir, "scenes", Filters(adm=ADM), path, export_format(path, None))
    if fmt == "parquet":
        rows = pq.read_table(path).to_pylist()
        rows = [{k: dict(v) if k in map_columns("scenes") else v for k, v in r.items()}
                for r in rows]
    elif fmt == "json":
        rows = json.loads(path.read_text())
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert count == len(rows) and by_key(rows) == _expected(tables_dir)


@pytest.mark.parametrize(("fmt", "delimiter"), [("csv", ","), ("tsv", "\t")])
def test_text_formats_hold_maps_and_lists_as_json(tables_dir, tmp_path, fmt, delimiter):
    path = tmp_path / "rows.txt"
    count = export(tables_dir, "experiments", Filters(adm=ADM), path, export_format(path, fmt))
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=delimiter))
    expected = _expected(tables_dir, "experiments")
    assert count == len(rows) == len(expected)
    for row in rows:
        want = expected[(row["partition_key"], row["alignment_target_id"])]
        for column in nested_columns("experiments"):
            assert json.loads(row[column]) == want[column]
        assert row["hydra_config"] == (want["hydra_config"] or "")


def test_where_and_bad_formats(tables_dir, tmp_path):
    path = tmp_path / "slow.jsonl"
    export(tables_dir, "scenes", Filters(where="timing_seconds > 40"), path, "jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert by_key(rows) == by_key([r for r in table_rows(tables_dir, "scenes")
                                   if (r["timing_seconds"] or 0) > 40])
    with pytest.raises(AnalysisError, match="unknown export format 'xlsx'.*valid: csv, tsv"):
        export_format(tmp_path / "out.xlsx", None)
    with pytest.raises(AnalysisError, match="--where may read the tables only"):
        export(tables_dir, "scenes", Filters(where="(SELECT count(*) FROM read_csv("
                                                   f"'{tmp_path}/x.csv')) > 0"),
               tmp_path / "x.csv", "csv")
