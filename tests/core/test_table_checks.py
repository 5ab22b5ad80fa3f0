import pyarrow as pa

from align_track_pipeline.core.source.discovery import find_run_dirs
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.tables.checks import row_contract
from tests.conftest import SAMPLE_TREE


def _scenes() -> tuple[pa.Table, int]:
    run_dir = find_run_dirs(SAMPLE_TREE)[0]
    parsed = parse_run_dir(run_dir, SAMPLE_TREE)
    return parsed.scenes, parsed.item_count


def test_contract_passes_on_parsed_data():
    scenes, items = _scenes()
    outcome = row_contract("scenes", scenes, items)
    assert outcome.passed and outcome.details["scenes"] == items


def test_duplicate_keys_fail():
    scenes, items = _scenes()
    doubled = pa.concat_tables([scenes, scenes.slice(0, 1)])
    outcome = row_contract("scenes", doubled, items)
    assert not outcome.passed
    assert "1 duplicate rows on (partition_key, scene_index)" in outcome.description


def test_nulls_in_required_columns_fail():
    scenes, items = _scenes()
    idx = scenes.schema.get_field_index("scenario_id")
    nulled = scenes.set_column(idx, scenes.schema.field(idx).with_nullable(True),
                               pa.array([None] * scenes.num_rows, pa.string()))
    outcome = row_contract("scenes", nulled, items)
    assert not outcome.passed and f"scenario_id ({scenes.num_rows})" in outcome.description


def test_missing_rows_fail():
    scenes, items = _scenes()
    outcome = row_contract("scenes", scenes.slice(1), items)
    assert not outcome.passed
    assert f"{items - 1} scenes for {items} items" in outcome.description


def test_experiments_contract_counts_scenes():
    run_dir = find_run_dirs(SAMPLE_TREE)[0]
    parsed = parse_run_dir(run_dir, SAMPLE_TREE)
    assert row_contract("experiments", parsed.experiments, parsed.item_count).passed
    assert not row_contract("experiments", parsed.experiments, parsed.item_count + 1).passed
