"""Pins the MLflow internals the bulk writer uses: these fail loudly if MLflow moves them, and
the bulk path is held to what MLflow's own client stores."""

import base64
import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.dbmodels.models import Base

from align_track_pipeline.core.source.discovery import RunDir
from align_track_pipeline.core.source.parse import parse_run_dir
from align_track_pipeline.core.trackers.mlflow import compat as mc
from align_track_pipeline.core.trackers.mlflow.plan import TAG_KEY, plan_runs
from align_track_pipeline.core.trackers.mlflow.traces import plan_traces
from align_track_pipeline.core.trackers.mlflow.writer import TAG_BATCH, MlflowWriter
from tests.conftest import SAMPLE_TREE


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


def test_the_tables_the_run_lookup_reads():
    """`mlflow/lookup.py` reads MLflow's tables with plain SQL (no MLflow import)."""
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    assert (mc.SqlTag.__tablename__, mc.SqlRun.__tablename__,
            SqlExperiment.__tablename__) == ("tags", "runs", "experiments")
    assert {c.name for c in SqlExperiment.__table__.columns} >= {"experiment_id", "name"}


def test_the_store_generation_is_the_experiments_id_and_creation_time(tmp_path):
    """`lookup.store_generation` reads the experiment's row with plain SQL: what MLflow's own
    client reports, none before the store exists, another value for a store made again,
    the same for a soft-deleted experiment (the writer writes into it)."""
    from mlflow import MlflowClient

    from align_track_pipeline.core.trackers.mlflow.lookup import (
        generation_file,
        store_generation,
    )
    from align_track_pipeline.core.trackers.sqlite_value import NONE

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = generation_file(uri)
    assert path == tmp_path / "mlflow.db"
    assert generation_file(f"http://127.0.0.1:5000{tmp_path}") is None  # not told
    assert store_generation(path, "exp") == NONE  # no file: nothing vouches for any run
    writer = MlflowWriter(uri, "exp")
    client = MlflowClient(uri)
    found = client.get_experiment_by_name("exp")
    first = store_generation(path, "exp")
    assert first == f"{found.experiment_id}.{found.creation_time}"
    client.delete_experiment(found.experiment_id)
    assert store_generation(path, "exp") == first
    writer._backend._store.engine.dispose()  # deleted between processes, as a user would
    for file in tmp_path.glob("mlflow.db*"):
        file.unlink()
    MlflowWriter(uri, "exp")  # the same name, in a store made again
    assert store_generation(path, "exp") not in (first, NONE)


@pytest.mark.postgres
def test_a_database_servers_generation_is_read_with_one_query(postgres):
    """`lookup.remote_generation` on Postgres: none before MLflow's tables exist or the
    experiment is made, then what MLflow's own client reports (as `store_generation` spells
    it for SQLite), another one for the experiment made again under the same name."""
    from mlflow import MlflowClient

    from align_track_pipeline.core.trackers.mlflow.lookup import remote_generation
    from align_track_pipeline.core.trackers.sqlite_value import NONE

    uri = postgres()
    assert remote_generation(uri, "exp") == NONE  # an empty database: nothing written
    MlflowWriter(uri, "other")
    assert remote_generation(uri, "exp") == NONE
    MlflowWriter(uri, "exp")
    client = MlflowClient(uri)
    found = client.get_experiment_by_name("exp")
    first = remote_generation(uri, "exp")
    assert first == f"{found.experiment_id}.{found.creation_time}"
    client.rename_experiment(found.experiment_id, "exp-before")
    MlflowWriter(uri, "exp")
    assert remote_generation(uri, "exp") not in (first, NONE, "")
    elsewhere = urlsplit(uri)._replace(path="/no_such_database").geturl()
    assert remote_generation(elsewhere, "exp") == ""  # does not answer: nothing concluded


def test_validation_rejects_what_mlflow_rejects():
    mc.validate_run_data({"a": "1"}, {"m": 1.0}, {"t": "x"}, 0)
    with pytest.raises(ValueError, match="would truncate 'a'"):
        mc.validate_run_data({"a": "x" * 6001}, {}, {}, 0)
    with pytest.raises(ValueError, match="would truncate 't'"):
        mc.validate_run_data({}, {}, {"t": "x" * 8001}, 0)
    with pytest.raises(MlflowException):
        mc.validate_run_data({f"p{i}": "1" for i in range(101)}, {}, {}, 0)


def test_bulk_trace_rows_read_back_as_mlflow_writes_them(tmp_path, mlflow_db):
    """`TraceRows` stores what `start_trace(TraceInfo)` + `log_spans` store for one root span:
    MLflow's client reads it back whole (tags, metadata link, span inputs/outputs, times,
    previews, feedback), and the tables and columns it inserts exist."""
    from mlflow import MlflowClient
    from sqlalchemy import insert

    uri = f"sqlite:///{mlflow_db}"
    store = mc.open_sql_store(uri, str(tmp_path / "art"))
    exp = store.create_experiment("e")
    run = store.create_run(exp, "u", 0, [], "r")
    rows, trace_id = mc.TraceRows(), "tr-" + "ab" * 16
    rows.add(trace_id=trace_id, experiment_id=exp, artifact_location=str(tmp_path / "art"),
             name="s | a", inputs={"probe": "é"}, outputs={"choice_index": 1},
             tags={"adm": "a"}, metadata={"mlflow.sourceRun": run.info.run_id},
             feedback={"score": 0.5}, source_id="x", start_ms=1_700_000_000_000,
             end_ms=1_700_000_002_000, request_preview="req", response_preview="resp")
    with mc.write_session(store) as session:
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
    assert client.delete_traces(exp, trace_ids=[trace_id]) == 1  # MLflow's own delete agrees


def _children(table: str) -> set[str]:
    """MLflow's tables whose rows belong to a row of `table`, at any depth (foreign keys)."""
    found, todo = set(), {table}
    while todo:
        parent = todo.pop()
        for child in Base.metadata.sorted_tables:
            if child.name not in found and any(
                    fk.column.table.name == parent for fk in child.foreign_keys):
                found.add(child.name)
                todo.add(child.name)
    return found


def test_a_replaced_trace_takes_every_table_mlflow_keeps_for_it():
    """The bulk path deletes a replaced trace's rows itself (`TRACE_CHILD_MODELS`): that must
    be every table MLflow's own schema hangs off `trace_info`, so none is left behind."""
    assert {m.__tablename__ for m in mc.TRACE_CHILD_MODELS} == _children("trace_info")


def test_the_schema_is_the_alembic_head_the_bulk_path_was_verified_on(tmp_path):
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    store = mc.open_sql_store(f"sqlite:///{tmp_path}/m.db", str(tmp_path / "art"))
    assert mc.schema_revision(store) == mc.SCHEMA_HEAD, "MLflow's schema moved: re-verify"
    head = ScriptDirectory.from_config(_get_alembic_config(store.db_uri)).get_current_head()
    assert head == mc.SCHEMA_HEAD


def test_write_sessions_write_to_the_primary_even_with_a_read_replica(tmp_path,
                                                                      empty_mlflow_db):
    """MLflow's `ManagedSessionMaker()` defaults to read-only, which a store with a read
    replica routes to the replica; `write_session` writes to the primary."""
    import shutil

    from sqlalchemy import text

    for name in ("primary.db", "replica.db"):  # MLflow's schema (how it is made: not here)
        shutil.copyfile(empty_mlflow_db, tmp_path / name)
    store = mc.SqlAlchemyStore(f"sqlite:///{tmp_path}/primary.db", str(tmp_path / "art"),
                               read_db_uri=f"sqlite:///{tmp_path}/replica.db")
    count = text("SELECT count(*) FROM experiments WHERE name = 'written'")
    with mc.write_session(store) as session:
        session.execute(text("INSERT INTO experiments (name, lifecycle_stage, workspace) "
                             "VALUES ('written', 'active', 'default')"))
    with store.ManagedSessionMaker() as session:  # the default: read-only, the replica
        assert session.execute(count).scalar() == 0
    with store.engine.connect() as conn:
        assert conn.execute(count).scalar() == 1


# Columns that hold the time of writing (a run without a start in its data is counted from it):
# compared as present, not by value.
_TIMES = {"start_time", "end_time", "timestamp", "timestamp_ms", "trace_timestamp_ms",
          "created_timestamp", "last_updated_timestamp", "creation_time", "last_update_time",
          "start_time_unix_nano", "end_time_unix_nano", "deleted_time"}


def _tables(db: Path, root: Path) -> dict[str, list]:
    """Every table of MLflow's schema (its own model list), each row with ids replaced by the
    run or trace key they belong to, times by their presence, paths by `<root>`."""
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = {t.name: [dict(r._mapping) for r in conn.execute(t.select())]
                for t in Base.metadata.sorted_tables}
    engine.dispose()
    ids = {str(root): "<root>"}
    ids |= {r["run_uuid"]: f"<run {r['value']}>" for r in rows["tags"] if r["key"] == TAG_KEY}
    for r in rows["trace_tags"]:
        if r["key"] == TAG_KEY:
            raw = bytes.fromhex(r["request_id"].removeprefix("tr-"))
            for form in (r["request_id"], raw.hex(), base64.b64encode(raw).decode(),
                         base64.b64encode(raw[:8]).decode(), raw[:8].hex()):
                ids[form] = f"<trace {r['value']}>"
    ids |= {r["assessment_id"]: "<assessment>" for r in rows["assessments"]}
    ordered = sorted(ids.items(), key=lambda kv: -len(kv[0]))

    def value(column: str, v):
        if column in _TIMES:
            return v is not None
        if column == "content":  # a span's JSON: its times too
            v = json.dumps({k: (x if k not in _TIMES else x is not None)
                            for k, x in json.loads(v).items()}, sort_keys=True)
        if isinstance(v, str):
            for raw, key in ordered:
                v = v.replace(raw, key)
        return v

    def row(table: str, r: dict) -> str:
        if table == "tags" and r["key"] == TAG_BATCH:
            r = r | {"value": bool(r["value"])}  # a random id per write
        if table == "experiments" and r["name"] == "Default":
            r = r | {"artifact_location": None}  # MLflow's own, from how the store was opened
        return repr(sorted((k, value(k, v)) for k, v in r.items()))

    return {table: sorted(row(table, r) for r in found) for table, found in rows.items()}


def test_the_bulk_path_stores_what_mlflows_client_stores(tmp_path, monkeypatch,
                                                        empty_mlflow_db):
    """One partition (runs, params, metrics, tags, traces, scores) written, then removed,
    through the bulk path and through MLflow's client into two SQLite stores: every table
    MLflow keeps holds the same rows after each, ids and write times aside."""
    rel = "comp_reg_icl_adept/moral_judgement-0.2"
    parsed = parse_run_dir(RunDir(SAMPLE_TREE / rel, rel), SAMPLE_TREE)
    experiments, scenes = parsed.experiments.to_pylist(), parsed.scenes.to_pylist()
    specs = plan_runs(experiments, scenes, SAMPLE_TREE / rel)
    traces = plan_traces(experiments, scenes, "nested")
    assert specs and traces and any(t.feedback for t in traces)
    tables, removed = {}, {}
    for path in ("bulk", "public"):
        if path == "public":
            monkeypatch.setenv("ALIGN_TRACK_PUBLIC_APIS", "1")
        shutil.copyfile(empty_mlflow_db, tmp_path / f"{path}.db")  # MLflow's schema, no runs
        writer = MlflowWriter(f"sqlite:///{tmp_path}/{path}.db", "align-system",
                              str(tmp_path / path))
        assert type(writer._backend).__name__ == {"bulk": "_SqlBackend",
                                                   "public": "_ApiBackend"}[path]
        writer.upsert(RunDir(SAMPLE_TREE / rel, rel).key, specs, traces)
        tables[path] = _tables(tmp_path / f"{path}.db", tmp_path / path)
        writer.delete_partition(RunDir(SAMPLE_TREE / rel, rel).key)
        removed[path] = _tables(tmp_path / f"{path}.db", tmp_path / path)
    assert set(tables["bulk"]) == {t.name for t in Base.metadata.sorted_tables}
    assert len(tables["bulk"]["runs"]) == len(specs)
    assert len(tables["bulk"]["trace_info"]) == len(traces)
    for table in tables["bulk"]:
        assert tables["bulk"][table] == tables["public"][table], table
        assert removed["bulk"][table] == removed["public"][table], f"{table}, after removal"
    assert removed["bulk"]["trace_info"] == [] and len(removed["bulk"]["runs"]) == len(specs)


def test_artifact_repositories_for_a_servers_proxy_and_a_folder(tmp_path):
    """The HTTP writer uploads a partition's files through one repository of the experiment's
    location: `mlflow-artifacts:/<id>` resolves to the tracking server's proxy, a folder is
    written in place under the path given."""
    proxied = mc.artifact_repository("mlflow-artifacts:/7", "http://127.0.0.1:5999")
    assert proxied.artifact_uri == "http://127.0.0.1:5999/api/2.0/mlflow-artifacts/artifacts/7"
    assert callable(proxied.log_artifact)
    source = tmp_path / "scene_data.json"
    source.write_text("{}")
    mc.artifact_repository(str(tmp_path / "exp"), "http://127.0.0.1:5999").log_artifact(
        str(source), "run1/artifacts/scene_0")
    assert (tmp_path / "exp" / "run1" / "artifacts" / "scene_0" / "scene_data.json").read_text() \
        == "{}"
