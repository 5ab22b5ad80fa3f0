"""The few MLflow internals the bulk SQL writer relies on, each in one place.

MLflow is pinned in uv.lock; tests/core/test_mlflow_compat.py fails loudly if any of these
moves. The bulk path lets MLflow create and migrate the schema (by opening its own
SqlAlchemyStore) and applies MLflow's own validation before inserting rows.
"""

from __future__ import annotations

from mlflow.entities import Metric, Param, RunTag
from mlflow.store.tracking.dbmodels.models import (
    SqlExperiment,
    SqlLatestMetric,
    SqlMetric,
    SqlParam,
    SqlRun,
    SqlTag,
)
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.validation import _validate_batch_log_data, _validate_batch_log_limits

# Child tables of a run, deleted with it (what MLflow's own hard delete removes).
RUN_CHILD_MODELS = (SqlMetric, SqlLatestMetric, SqlParam, SqlTag)

__all__ = ["RUN_CHILD_MODELS", "SqlAlchemyStore", "SqlExperiment", "SqlLatestMetric",
           "SqlMetric", "SqlParam", "SqlRun", "SqlTag", "open_sql_store", "validate_run_data"]


def open_sql_store(db_uri: str, artifact_root: str) -> SqlAlchemyStore:
    """MLflow's store on `db_uri`: creates or migrates the schema as MLflow does."""
    return SqlAlchemyStore(db_uri, artifact_root)


def validate_run_data(params: dict[str, str], metrics: dict[str, float],
                      tags: dict[str, str], timestamp: int) -> None:
    """MLflow's own validation of one run's batch (names, counts, values). MLflow would cut
    over-long values with a warning; we refuse instead, since nothing may be cut silently."""
    entities = (
        [Metric(k, v, timestamp, 0) for k, v in metrics.items()],
        [Param(k, v) for k, v in params.items()],
        [RunTag(k, v) for k, v in tags.items()],
    )
    _validate_batch_log_limits(*entities)
    _, checked_params, checked_tags = _validate_batch_log_data(*entities)
    for given, checked in ((entities[1], checked_params), (entities[2], checked_tags)):
        for before, after in zip(given, checked, strict=True):
            if after.value != before.value:
                raise ValueError(f"MLflow would truncate {before.key!r} "
                                 f"({len(before.value)} chars)")
