"""`search` and its filters against rows read independently with pyarrow; `--where` cannot
read or write anything but the tables."""

from __future__ import annotations

import fnmatch

import pytest

from align_track_pipeline.core.analysis.connection import AnalysisError, open_tables
from align_track_pipeline.core.analysis.filters import Filters, parse_min_score
from align_track_pipeline.core.analysis.search import SHOWN_COLUMNS, search
from align_track_pipeline.core.schema import TABLES
from tests.core.analysis.expected import by_key, table_rows


def _search(data, table="scenes", limit=None, **filters):
    return search(open_tables(data), table, Filters(**filters), limit)


def test_two_filters_give_exactly_the_matching_rows(tables_dir):
    target = "ADEPT-DryRun-Moral judgement-0.2"
    found = _search(tables_dir, adm="pipeline_comparative_regression", target=target)
    expected = [r for r in table_rows(tables_dir, "scenes")
                if r["adm"] == "pipeline_comparative_regression"
                and r["alignment_target_id"] == target]
    assert expected and list(found.rows[0]) == TABLES["scenes"].names and not found.more
    assert by_key(found.rows) == by_key(expected)  # every column, full texts


def test_star_is_the_only_wildcard(tables_dir):
    found = _search(tables_dir, "experiments", adm="pipeline_*")
    expected = [r for r in table_rows(tables_dir, "experiments")
                if fnmatch.fnmatchcase(r["adm"], "pipeline_*")]
    assert expected and by_key(found.rows) == by_key(expected)
    assert _search(tables_dir, "experiments", adm="pipeline%").rows == []  # % is literal
    assert _search(tables_dir, "experiments", adm="pipeline?baseline").rows == []


def test_limit_says_when_more_rows_match(tables_dir):
    everything = by_key(table_rows(tables_dir, "scenes"))
    found = _search(tables_dir, limit=5)
    assert len(found.rows) == 5 and found.more
    assert all(everything[k] == row for k, row in by_key(found.rows).items())
    assert not _search(tables_dir, limit=len(everything)).more


def test_scenario_scene_and_llm(tables_dir):
    found = _search(tables_dir, scenario="DryRunEval.MJ1", scene="P2",
                    llm="mistralai/Mistral-7B-Instruct-v0.3")
    expected = [r for r in table_rows(tables_dir, "scenes")
                if (r["scenario_id"], r["scene_id"], r["llm_backbone"])
                == ("DryRunEval.MJ1", "P2", "mistralai/Mistral-7B-Instruct-v0.3")]
    assert expected and by_key(found.rows) == by_key(expected)


def test_min_score_reads_the_score_maps(tables_dir):
    found = _search(tables_dir, "experiments", min_scores=(parse_min_score("score=0.9"),))
    expected = [r for r in table_rows(tables_dir, "experiments")
                if r["scores"].get("score", -1) >= 0.9]
    assert expected and by_key(found.rows) == by_key(expected)
    with pytest.raises(AnalysisError, match="no score named 'nope'.*known: .*score"):
        _search(tables_dir, "experiments", min_scores=(("nope", 1.0),))
    with pytest.raises(AnalysisError, match="NAME=VALUE"):
        parse_min_score("score")


def test_where_is_a_condition_over_the_columns(tables_dir):
    found = _search(tables_dir, where="timing_seconds > 30 AND choice_index = 1")
    expected = [r for r in table_rows(tables_dir, "scenes")
                if (r["timing_seconds"] or 0) > 30 and r["choice_index"] == 1]
    assert expected and by_key(found.rows) == by_key(expected)
    assert _search(tables_dir, where="adm = 'no such adm'").rows == []


def test_an_unknown_column_names_the_valid_ones(tables_dir):
    with pytest.raises(AnalysisError, match="nosuch.*valid columns of scenes: partition_key"):
        _search(tables_dir, where="nosuch > 1")
    with pytest.raises(AnalysisError, match="scenario_id.*experiments.*--table scenes"):
        _search(tables_dir, "experiments", scenario="DryRunEval.MJ1")


@pytest.mark.parametrize("where", [
    "1=1; COPY scenes TO '{out}'",
    "1=1) UNION ALL (SELECT 1",
    "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0",
    "(SELECT count(*) FROM read_parquet('/etc/x.parquet')) > 0",
    "(SELECT count(*) FROM read_text('/etc/hostname')) > 0",
    "(SELECT count(*) FROM glob('/etc/*')) > 0",
    "(SELECT count(*) FROM read_blob('{data}/parquet/scenes/../../state/fingerprints.sqlite'))"
    " > 0",
])
def test_where_cannot_reach_outside_the_tables(tables_dir, tmp_path, where):
    out = tmp_path / "leak.csv"
    with pytest.raises(AnalysisError, match="--where"):
        _search(tables_dir, where=where.format(out=out, data=tables_dir))
    assert not out.exists()


def test_the_connection_cannot_be_unlocked(tables_dir):
    con = open_tables(tables_dir)
    for statement in ("SET enable_external_access = true", "SET lock_configuration = false",
                      "ATTACH '/tmp/other.db'", "INSTALL httpfs"):
        with pytest.raises(Exception, match="locked|disabled|Permission"):
            con.execute(statement)


def test_no_tables_yet_says_to_ingest(tmp_path):
    with pytest.raises(AnalysisError, match="run `align-track ingest` first"):
        open_tables(tmp_path / "empty")


def test_shown_columns_are_table_columns():
    for table, columns in SHOWN_COLUMNS.items():
        assert set(columns) <= set(TABLES[table].names)
