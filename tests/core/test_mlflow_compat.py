"""Pins the MLflow internals the bulk writer uses: these fail loudly if MLflow moves them."""

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from align_track_pipeline.core.trackers.mlflow import compat as mc


def test_mlflow_is_the_pinned_major_minor():
    assert mlflow.__version__.startswith(("3.17.", "3.18."))


def test_models_have_the_columns_we_insert():
    run_cols = {c.name for c in mc.SqlRun.__table__.columns}
    assert run_cols >= {"run_uuid", "name", "source_type", "source_name", "entry_point_name",
                        "user_id", "status", "start_time", "end_time", "deleted_time",
                        "source_version", "lifecycle_stage", "experiment_id", "artifact_uri"}
    for model in (mc.SqlTag, mc.SqlParam):
        assert {c.name for c in model.__table__.columns} == {"key", "value", "run_uuid"}
    for model in (mc.SqlMetric, mc.SqlLatestMetric):
        assert {c.name for c in model.__table__.columns} >= {
            "key", "value", "timestamp", "step", "is_nan", "run_uuid"}
    run_tables = {m.__tablename__ for m in mc.RUN_CHILD_MODELS}
    assert run_tables == {"metrics", "latest_metrics", "params", "tags"}


def test_the_tables_the_run_lookup_reads():
    """`mlflow/lookup.py` reads MLflow's tables with plain SQL (no MLflow import)."""
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    assert (mc.SqlTag.__tablename__, mc.SqlRun.__tablename__,
            SqlExperiment.__tablename__) == ("tags", "runs", "experiments")
    assert {c.name for c in SqlExperiment.__table__.columns} >= {"experiment_id", "name"}


def test_validation_rejects_what_mlflow_rejects():
    mc.validate_run_data({"a": "1"}, {"m": 1.0}, {"t": "x"}, 0)
    with pytest.raises(ValueError, match="would truncate 'a'"):
        mc.validate_run_data({"a": "x" * 6001}, {}, {}, 0)
    with pytest.raises(ValueError, match="would truncate 't'"):
        mc.validate_run_data({}, {}, {"t": "x" * 8001}, 0)
    with pytest.raises(MlflowException):
        mc.validate_run_data({f"p{i}": "1" for i in range(101)}, {}, {}, 0)


def test_bulk_trace_rows_read_back_as_mlflow_writes_them(tmp_path):
    """`TraceRows` stores what `start_trace(TraceInfo)` + `log_spans` store for one root span:
    MLflow's client reads it back whole (tags, metadata link, span inputs/outputs, times,
    previews, feedback), and the tables and columns it inserts exist."""
    from mlflow import MlflowClient
    from sqlalchemy import insert

    uri = f"sqlite:///{tmp_path}/m.db"
    store = mc.open_sql_store(uri, str(tmp_path / "art"))
    exp = store.create_experiment("e")
    run = store.create_run(exp, "u", 0, [], "r")
    rows, trace_id = mc.TraceRows(), "tr-" + "ab" * 16
    rows.add(trace_id=trace_id, experiment_id=exp, artifact_location=str(tmp_path / "art"),
             name="s | a", inputs={"probe": "é"}, outputs={"choice_index": 1},
             tags={"adm": "a"}, metadata={"mlflow.sourceRun": run.info.run_id},
             feedback={"score": 0.5}, source_id="x", start_ms=1_700_000_000_000,
             end_ms=1_700_000_002_000, request_preview="req", response_preview="resp")
    with store.ManagedSessionMaker() as session:
        for model, data in rows.rows.items():
            session.execute(insert(model), data)
    client = MlflowClient(uri)
    (trace,) = client.search_traces(locations=[exp], run_id=run.info.run_id)
    assert trace.info.trace_id == trace_id and trace.info.tags["adm"] == "a"
    assert (trace.info.request_time, trace.info.execution_duration) == (1_700_000_000_000, 2000)
    assert (trace.info.request_preview, trace.info.response_preview) == ("req", "resp")
    assert trace.data.spans[0].inputs == {"probe": "é"}
    assert trace.data.spans[0].outputs == {"choice_index": 1}
    (feedback,) = trace.info.assessments
    assert (feedback.name, feedback.value, feedback.source.source_type) == ("score", 0.5, "CODE")
    assert {m.__tablename__ for m in mc.TRACE_CHILD_MODELS} == {
        "trace_tags", "trace_request_metadata", "spans", "assessments", "trace_metrics",
        "span_metrics"}
    assert client.delete_traces(exp, trace_ids=[trace_id]) == 1  # MLflow's own delete agrees
