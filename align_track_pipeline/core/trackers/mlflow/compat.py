"""The few MLflow internals the bulk SQL writer relies on, each in one place.

MLflow is pinned in uv.lock, and the bulk path is used only on the versions it was verified on
(`verified.mlflow_internals`); tests/core/test_mlflow_compat.py fails loudly if any of these
moves, and compares what the bulk path stores with what MLflow's client stores, table by
table. The bulk path lets MLflow create and migrate the schema (by opening its own
SqlAlchemyStore) and applies MLflow's own validation before inserting rows.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.entities import AssessmentSource, Feedback, Metric, Param, RunTag
from mlflow.store.tracking.dbmodels.models import (
    SqlAssessments,
    SqlEntityAssociation,
    SqlExperiment,
    SqlLatestMetric,
    SqlMetric,
    SqlParam,
    SqlRun,
    SqlSpan,
    SqlSpanMetrics,
    SqlTag,
    SqlTraceInfo,
    SqlTraceMetadata,
    SqlTraceMetrics,
    SqlTraceTag,
)
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.validation import _validate_batch_log_data, _validate_batch_log_limits

# Child tables of a trace, deleted with it (MLflow relies on ON DELETE CASCADE, which SQLite
# applies only with its foreign_keys pragma: we delete them explicitly).
TRACE_CHILD_MODELS = (SqlTraceTag, SqlTraceMetadata, SqlSpan, SqlAssessments, SqlTraceMetrics,
                      SqlSpanMetrics)

# The schema (Alembic revision) the bulk path was verified on: MLflow 3.17.2's head.
SCHEMA_HEAD = "dc11669786a5"

__all__ = ["SCHEMA_HEAD", "TRACE_CHILD_MODELS", "SqlAlchemyStore", "SqlEntityAssociation",
           "SqlExperiment", "SqlLatestMetric", "SqlMetric", "SqlParam", "SqlRun", "SqlTag",
           "SqlTraceInfo", "SqlTraceTag", "TraceRows", "open_sql_store", "schema_revision",
           "validate_run_data", "write_session"]


def open_sql_store(db_uri: str, artifact_root: str) -> SqlAlchemyStore:
    """MLflow's store on `db_uri`: creates or migrates the schema as MLflow does."""
    return SqlAlchemyStore(db_uri, artifact_root)


@contextmanager
def write_session(store: SqlAlchemyStore) -> Iterator:
    """A session of MLflow's own that writes: `ManagedSessionMaker()` defaults to
    `read_only=True`, which a store with a read replica routes to the replica."""
    with store.ManagedSessionMaker(read_only=False) as session:
        yield session


def schema_revision(store: SqlAlchemyStore) -> str:
    """The store's schema revision (MLflow's Alembic `alembic_version` table)."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


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


class TraceRows:
    """Rows of whole traces for executemany inserts into MLflow's trace tables: what MLflow's
    `start_trace(TraceInfo)` followed by `log_spans` stores for a trace of one root span
    (tests/core/test_mlflow_compat.py compares the two), without their per-trace sessions."""

    MODELS = (SqlTraceInfo, SqlTraceTag, SqlTraceMetadata, SqlSpan, SqlAssessments)

    def __init__(self) -> None:
        self.rows: dict[type, list[dict]] = {model: [] for model in self.MODELS}

    def add(self, *, trace_id: str, experiment_id: str, artifact_location: str, name: str,
            inputs: dict, outputs: dict, tags: dict[str, str], metadata: dict[str, str],
            feedback: dict[str, float], source_id: str, start_ms: int, end_ms: int,
            request_preview: str, response_preview: str) -> None:
        exp = int(experiment_id)
        self.rows[SqlTraceInfo].append({
            "request_id": trace_id, "experiment_id": exp, "timestamp_ms": start_ms,
            "execution_time_ms": end_ms - start_ms, "status": "OK", "client_request_id": None,
            "request_preview": request_preview, "response_preview": response_preview,
            "trace_name": name, "db_payload_generation": 1})
        tags = {**tags, "mlflow.trace.spansLocation": "TRACKING_STORE",
                "mlflow.artifactLocation":
                    f"{artifact_location.rstrip('/')}/traces/{trace_id}/artifacts"}
        self.rows[SqlTraceTag] += [{"request_id": trace_id, "key": k, "value": v}
                                   for k, v in tags.items()]
        metadata = {**metadata, "mlflow.trace_schema.version": "3",
                    "mlflow.trace.infoFinalized": "true"}
        self.rows[SqlTraceMetadata] += [{"request_id": trace_id, "key": k, "value": v}
                                        for k, v in metadata.items()]
        self.rows[SqlSpan].append(_root_span(trace_id, exp, name, inputs, outputs,
                                             start_ms * 1_000_000, end_ms * 1_000_000))
        now = int(time.time() * 1000)
        for score, value in feedback.items():
            entity = Feedback(name=score, value=value, trace_id=trace_id,
                              source=AssessmentSource("CODE", source_id))
            entity.assessment_id = f"a-{uuid.uuid4().hex}"
            entity.create_time_ms = entity.last_update_time_ms = now
            sql = SqlAssessments.from_mlflow_entity(entity)
            row = {c.key: getattr(sql, c.key) for c in SqlAssessments.__table__.columns}
            row |= {"experiment_id": exp, "trace_timestamp_ms": start_ms,
                    "valid": True if row["valid"] is None else row["valid"],
                    "is_numeric_value": bool(row["is_numeric_value"])}
            self.rows[SqlAssessments].append(row)


def root_span_dict(trace_id: str, experiment_id: int | str, name: str, inputs: dict,
                   outputs: dict, start_ns: int, end_ns: int,
                   tags: dict[str, str] | None = None) -> dict:
    """A trace's one (root) span as MLflow serializes it (`Span.to_dict`): the OTel span with
    JSON-encoded attribute values. `tags` become `mlflow.traceTag.<key>` attributes, which a
    server's OTLP endpoint turns into the trace's tags."""
    otel_trace = bytes.fromhex(trace_id.removeprefix("tr-"))
    attributes = {"mlflow.traceRequestId": json.dumps(trace_id),
                  "mlflow.experimentId": json.dumps(str(experiment_id)),
                  "mlflow.spanType": json.dumps("CHAIN"),
                  "mlflow.spanInputs": json.dumps(inputs, ensure_ascii=False),
                  "mlflow.spanOutputs": json.dumps(outputs, ensure_ascii=False)}
    attributes |= {f"mlflow.traceTag.{k}": json.dumps(v) for k, v in (tags or {}).items()}
    return {"trace_id": base64.b64encode(otel_trace).decode(),
            # one span per trace: any id unique within the trace
            "span_id": base64.b64encode(otel_trace[:8]).decode(),
            "parent_span_id": None, "name": name, "start_time_unix_nano": start_ns,
            "end_time_unix_nano": end_ns, "events": [],
            "status": {"code": "STATUS_CODE_OK", "message": ""},
            "attributes": attributes, "links": []}


def _root_span(trace_id: str, experiment_id: int, name: str, inputs: dict, outputs: dict,
               start_ns: int, end_ns: int) -> dict:
    """A `spans` row: the span's JSON and the columns MLflow queries."""
    content = root_span_dict(trace_id, experiment_id, name, inputs, outputs, start_ns, end_ns)
    return {"trace_id": trace_id, "experiment_id": experiment_id,
            "span_id": bytes.fromhex(trace_id.removeprefix("tr-"))[:8].hex(),
            "parent_span_id": None, "name": name, "type": "CHAIN", "status": "OK",
            "start_time_unix_nano": start_ns, "end_time_unix_nano": end_ns,
            "content": json.dumps(content, ensure_ascii=False)}


def store_trace(tracking_uri: str, experiment_id: str, trace_id: str, span: dict, *,
                start_ms: int, end_ms: int, tags: dict[str, str], metadata: dict[str, str],
                request_preview: str, response_preview: str) -> None:
    """One whole trace (its root span dict) into any store MLflow's tracing client writes to
    (what the fluent API does when a trace ends): its info, then its span."""
    from mlflow.entities import Span, TraceInfo, TraceLocation, TraceState
    from mlflow.tracing.client import TracingClient
    from mlflow.tracing.constant import (
        TRACE_SCHEMA_VERSION,
        TRACE_SCHEMA_VERSION_KEY,
        TraceTagKey,
    )

    client = TracingClient(tracking_uri)
    client.start_trace(TraceInfo(
        trace_id=trace_id, trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=start_ms, execution_duration=end_ms - start_ms, state=TraceState.OK,
        request_preview=request_preview, response_preview=response_preview,
        trace_metadata={**metadata, TRACE_SCHEMA_VERSION_KEY: str(TRACE_SCHEMA_VERSION)},
        tags={**tags, TraceTagKey.TRACE_NAME: span["name"]}))  # named after its root span
    client.log_spans(experiment_id, [Span.from_dict(span)])


def otlp_export(tracking_uri: str, experiment_id: str, run_id: str, spans: list[dict]) -> None:
    """Send whole traces (span dicts) to a tracking server's OTLP endpoint in one request,
    linked to `run_id`: the server stores them with one `log_spans` and links them to the run
    (what `RestStore.log_spans` does, plus the run header it does not send)."""
    from mlflow.entities import Span
    from mlflow.tracing.utils.otlp import (
        MLFLOW_EXPERIMENT_ID_HEADER,
        MLFLOW_RUN_ID_HEADER,
        OTLP_TRACES_PATH,
    )
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request, verify_rest_response
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    scope.spans.extend(Span.from_dict(span).to_otel_proto() for span in spans)
    headers = {"Content-Type": "application/x-protobuf",
               MLFLOW_EXPERIMENT_ID_HEADER: experiment_id}
    if run_id:
        headers[MLFLOW_RUN_ID_HEADER] = run_id
    response = http_request(host_creds=get_default_host_creds(tracking_uri),
                            endpoint=OTLP_TRACES_PATH, method="POST",
                            data=request.SerializeToString(), extra_headers=headers)
    verify_rest_response(response, OTLP_TRACES_PATH)


def delete_assessment(tracking_uri: str, trace_id: str, assessment_id: str) -> None:
    """Remove one assessment of a stored trace (a score two writers both logged)."""
    from mlflow.tracing.client import TracingClient

    TracingClient(tracking_uri).delete_assessment(trace_id, assessment_id)


def log_feedback(tracking_uri: str, trace_id: str, name: str, value: float,
                 source_id: str) -> None:
    """One score of a stored trace, as a feedback assessment from CODE."""
    from mlflow.tracing.client import TracingClient

    TracingClient(tracking_uri).log_assessment(
        trace_id, Feedback(name=name, value=value, source=AssessmentSource("CODE", source_id)))


def artifact_repository(artifact_uri: str, tracking_uri: str):
    """MLflow's artifact repository for `artifact_uri` (a folder, `mlflow-artifacts:/...`
    through the tracking server, s3://, ...): what `MlflowClient.log_artifacts` uses, without
    its `get_run` per run to learn the run's artifact URI."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(artifact_uri, tracking_uri=tracking_uri)
