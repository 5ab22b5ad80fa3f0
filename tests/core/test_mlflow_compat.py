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
