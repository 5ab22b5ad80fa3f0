"""UI backfills and automation requests run contiguous batches of partitions, several runs for
a large backfill (so they go in parallel), never one run per partition."""

import dagster as dg

from align_track_pipeline.definitions import build_defs
from align_track_pipeline.defs.partitions import PARTITIONS_PER_RUN, batch_policy


def test_tables_and_trackers_backfill_in_batches_of_50(tmp_path):
    graph = build_defs(data_dir=str(tmp_path)).resolve_asset_graph()
    for asset in ("experiments", "scenes", "mlflow_runs", "aim_runs"):
        policy = graph.get(dg.AssetKey(asset)).backfill_policy
        assert policy == dg.BackfillPolicy.multi_run(50)


def test_the_batch_size_is_a_setting(monkeypatch):
    monkeypatch.setenv(PARTITIONS_PER_RUN, "200")
    assert batch_policy().max_partitions_per_run == 200
