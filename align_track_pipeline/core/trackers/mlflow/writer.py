"""Idempotent, batched upsert of one partition's MLflow runs.

A partition's runs are found by one lookup (tag `align_track.partition`). If they match the
planned runs exactly (same keys, same content hashes, one each, all FINISHED) nothing is
written; otherwise runs are replaced: on a SQL store only those whose content changed (a
scene's run keeps its id, and the links to it, while a neighbour scene changes; a kept run
whose parent was replaced is nested under the new parent), through the public API the
partition's runs as one batch. A write cut short by a crash leaves a mismatch, which the next
upsert repairs.

Replaced and removed runs are soft-deleted on every backend (MLflow's `deleted` lifecycle
stage: kept with their data and artifacts, restorable with `MlflowClient.restore_run`, gone
for good after `mlflow gc`), and lose their identity first: their partition and key tags take
the prefix `REPLACED`, so a replaced run that someone restores is an old version beside the
partition's runs (found by no lookup), never a second run of a key.

Two backends share that logic, each idempotent at the store, whatever process or Dagster
instance writes:
- a SQL store (SQLite, Postgres) on a verified MLflow (`verified.mlflow_internals`): the lookup
  and the replacement happen in one transaction that
  first takes a lock (Postgres: an advisory lock on the experiment and partition; SQLite: the
  database's write lock), rows inserted with MLflow's own SQLAlchemy models (the pattern of
  MLflow's `migrate-filestore`), artifacts written straight into the runs' artifact folders.
  A second writer of the partition waits, then finds it converged.
- any other URI (an `http://` server, no transactions), or any store on an MLflow version the
  bulk path was not verified on: the public batched API, and a check
  after the write. Each write is a batch (tag `align_track.batch`); after writing, the
  partition's runs are read back and exactly one batch is kept, the same one whichever writer
  looks (`batches`), the rest deleted. A writer that finds a batch still being written waits
  for it rather than writing its own.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from align_track_pipeline.core.faults import fault_point
from align_track_pipeline.core.locking import file_lock
from align_track_pipeline.core.scratch import scratch
from align_track_pipeline.core.source.redaction import redact_file
from align_track_pipeline.core.trackers.mlflow import batches
from align_track_pipeline.core.trackers.mlflow import traces as tr
from align_track_pipeline.core.trackers.mlflow.lookup import check_reachable, is_sql, quote
from align_track_pipeline.core.trackers.mlflow.plan import (
    CURRENT_TAGS,
    TAG_HASH,
    TAG_KEY,
    TAG_PARTITION,
    RunSpec,
)
from align_track_pipeline.core.trackers.mlflow.traces import TraceSpec
from align_track_pipeline.core.trackers.owner import OWNER, claim
from align_track_pipeline.core.trackers.times import epoch_span
from align_track_pipeline.core.verified import mlflow_internals

FINISHED = "FINISHED"
TAG_BATCH = "align_track.batch"
REPLACED = "replaced:"  # before a replaced run's partition and key (see the docstring)
PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class Existing:
    run_id: str
    key: str | None
    content_hash: str | None
    status: str
    batch: str = ""


@dataclass(frozen=True)
class UpsertResult:
    run_ids: dict[str, str]  # run key -> run id
    written: int  # runs written
    deleted: int
    traces_written: int = 0
    traces: int = 0  # the partition's traces, counted back after the write


@dataclass(frozen=True)
class ExistingTrace:
    trace_id: str
    key: str | None
    content_hash: str | None


def converged(existing: list[Existing], specs: list[RunSpec]) -> bool:
    """One FINISHED run per planned key, with the planned content: nothing to do."""
    wanted = {s.key: s.content_hash for s in specs}
    have = {e.key: e.content_hash for e in existing}
    return (len(existing) == len(specs) and have == wanted
            and all(e.status == FINISHED for e in existing))


def kept_runs(existing: list[Existing], specs: list[RunSpec]) -> dict[str, Existing]:
    """Per planned key, the run kept as it is: a FINISHED one with the planned content (the
    first found; another of the same key is replaced like any other)."""
    wanted = {s.key: s.content_hash for s in specs}
    kept: dict[str, Existing] = {}
    for run in existing:
        if (run.key in wanted and run.key not in kept and run.status == FINISHED
                and run.content_hash == wanted[run.key]):
            kept[run.key] = run
    return kept


def traces_converged(existing: list[ExistingTrace], specs: list[TraceSpec] | None) -> bool:
    """One trace per planned key, with the planned content (None: traces are not written)."""
    if specs is None:
        return True
    wanted = {s.key: s.content_hash for s in specs}
    return (len(existing) == len(specs)
            and {e.key: e.content_hash for e in existing} == wanted)


class MlflowWriter:
    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None,
                 shared_artifacts: bool = False):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._own_artifacts = None if shared_artifacts else artifact_root
        if is_sql(tracking_uri) and mlflow_internals():
            self._backend: _Backend = _SqlBackend(tracking_uri, experiment, artifact_root)
        else:
            local = shared_artifacts or is_sql(tracking_uri)  # a SQL store past the gate
            self._backend = _ApiBackend(tracking_uri, experiment,
                                        artifact_root if local else None)

    @property
    def experiment_id(self) -> str:
        return self._backend.experiment_id

    def upsert(self, partition: str, specs: list[RunSpec],
               traces: list[TraceSpec] | None = None) -> UpsertResult:
        """The partition's runs, and its traces unless `traces` is None (then left as they
        are)."""
        result = self._backend.upsert(partition, specs, traces)
        if result.written or result.deleted or result.traces_written:
            fault_point("mlflow.partition_written")
        return result

    def claim(self, data_dir: str | None, store: str) -> None:
        """Mark the experiment with the data dir's tree, or refuse another tree's (`owner`)."""
        from mlflow.exceptions import MlflowException

        claim(lambda: self._backend.experiment_tag(OWNER),
              lambda mark: self._backend.set_experiment_tag(OWNER, mark),
              partial(creation_lock, self.tracking_uri), data_dir, store,
              "Give this tree its own experiment (--mlflow-experiment NAME) or store "
              "(--mlflow-uri).", refused=(MlflowException,))

    def follow_a_moved_data_dir(self) -> None:
        """Repoint a moved data dir's own store to its artifacts' new place (`_SqlBackend`)."""
        self._backend.follow_a_moved_data_dir(self._own_artifacts)

    def delete_partition(self, partition: str) -> int:
        deleted = self._backend.upsert(partition, [], []).deleted
        if deleted:
            fault_point("mlflow.partition_written")
        return deleted

    def archive_partition(self, partition: str) -> int:
        """Move the partition's runs to MLflow's `deleted` lifecycle stage: hidden from the
        default views and from later upserts, kept with their data, restorable (`mlflow runs
        restore`, or the UI's deleted-runs view)."""
        return self._backend.archive_partition(partition)

    def close(self) -> None:
        self._backend.close()


# A partition's runs are found by their partition tag. MLflow's own index on tags, (key,
# run_uuid), makes that a scan of every run's partition tag: 7.8 ms a partition at 7,000 runs,
# growing with the store (quadratic over an ingest). A SQLite store (the embedded default, or
# any sqlite:// URI, which gets WAL here too) gets an index on (key, value); Postgres and
# other databases are left as their operators keep them.
PARTITION_INDEX = "CREATE INDEX IF NOT EXISTS align_track_tags_key_value ON tags (key, value)"


TRACE_INDEX = ("CREATE INDEX IF NOT EXISTS align_track_trace_tags_key_value "
               "ON trace_tags (key, value)")
DEFAULT_ARTIFACTS = "./mlartifacts"  # a SQL store's artifact root when none is given
_VERIFY_ROUNDS = 3  # a write, then a read that finds it converged (or writes what is missing)


class _Backend:
    experiment_id: str

    def experiment_tag(self, key: str) -> str | None: ...

    def set_experiment_tag(self, key: str, value: str) -> None: ...

    def follow_a_moved_data_dir(self, artifact_root: str | None) -> None:
        return None

    def upsert(self, partition: str, specs: list[RunSpec],
               traces: list[TraceSpec] | None) -> UpsertResult: ...

    def archive_partition(self, partition: str) -> int: ...

    def close(self) -> None:
        return None


class _SqlBackend(_Backend):
    """Rows through MLflow's SQLAlchemy models; one transaction per partition."""

    def __init__(self, uri: str, experiment: str, artifact_root: str | None):
        from sqlalchemy import event

        from align_track_pipeline.core.trackers.mlflow import compat as mc

        self._mc = mc
        with creation_lock(uri):  # several writers may find a brand-new store at once
            self._store = mc.open_sql_store(uri, artifact_root or DEFAULT_ARTIFACTS)
            if uri.startswith("sqlite"):
                event.listen(self._store.engine, "connect", _sqlite_pragmas)
                with self._store.engine.connect() as conn:  # WAL persists in the database file
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                with self._store.engine.begin() as conn:
                    conn.exec_driver_sql(PARTITION_INDEX)
                    conn.exec_driver_sql(TRACE_INDEX)
            found = self._store.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self._store.create_experiment(
                experiment, artifact_location=_experiment_artifacts(artifact_root, experiment))
        self._artifact_location = self._store.get_experiment(self.experiment_id).artifact_location

    def follow_a_moved_data_dir(self, artifact_root: str | None) -> None:
        """A data dir moved (or copied) elsewhere keeps its SQLite store, whose experiments,
        runs and traces name their artifacts by the old absolute path: the MLflow UI then
        showed none, and new runs recreated the old folder. Where the store is the data dir's
        own (`<data dir>/mlflow.db`, artifacts in `<data dir>/mlflow-artifacts`), every path
        under the old artifact root is made one under the new, in one transaction."""
        location = self._artifact_location or ""
        if not artifact_root or not self._store.db_uri.startswith("sqlite:///"):
            return
        database = Path(self._store.db_uri.removeprefix("sqlite:///"))
        if database.parent != Path(artifact_root).parent or location.startswith(
                artifact_root.rstrip("/") + "/"):
            return
        old = location.rsplit("/", 1)[0]  # the old `<data dir>/mlflow-artifacts`
        moved_here = Path(artifact_root) / location[len(old) + 1:]
        if Path(old).name != Path(artifact_root).name or not moved_here.is_dir():
            return  # not a data dir's own layout, or its artifacts are not here: left alone
        from sqlalchemy import String, func, literal

        mc, new = self._mc, artifact_root.rstrip("/")
        with mc.write_session(self._store) as session:
            for column, *where in ((mc.SqlExperiment.artifact_location,),
                                   (mc.SqlRun.artifact_uri,),
                                   (mc.SqlTraceTag.value,
                                    mc.SqlTraceTag.key == "mlflow.artifactLocation")):
                session.query(column.class_).filter(
                    func.substr(column, 1, len(old) + 1) == old + "/", *where).update(
                    {column: literal(new, String).concat(
                        func.substr(column, len(old) + 1, type_=String))},
                    synchronize_session=False)
        self._artifact_location = new + location[len(old):]

    def experiment_tag(self, key: str) -> str | None:
        return self._store.get_experiment(self.experiment_id).tags.get(key)

    def set_experiment_tag(self, key: str, value: str) -> None:
        from mlflow.entities import ExperimentTag

        self._store.set_experiment_tag(self.experiment_id, ExperimentTag(key, value))

    def close(self) -> None:
        """Close the store's connections. SQLite checkpoints its write-ahead log into the
        database and removes it when the last connection closes; a process that ends
        without closing them (the CLI's fast exit) left it behind, grown by every ingest
        (650 MB beside a 158 MB store after a day of single-folder ingests), and the next
        process read all of it back before its first query."""
        self._store.engine.dispose()

    def upsert(self, partition: str, specs: list[RunSpec],
               traces: list[TraceSpec] | None) -> UpsertResult:
        """Write, then read back until a round finds the partition converged: every write is
        counted back, and whatever is missing is written again."""
        written, deleted, traces_written = 0, 0, 0
        for _ in range(_VERIFY_ROUNDS):
            result = self._upsert_once(partition, specs, traces)
            if not (result.written or result.deleted or result.traces_written):
                return UpsertResult(result.run_ids, written, deleted, traces_written,
                                    result.traces)
            written += result.written
            deleted += result.deleted
            traces_written += result.traces_written
        raise RuntimeError(f"partition {partition}: its runs or traces did not read back as "
                           "written; the next run repairs it")

    def _upsert_once(self, partition: str, specs: list[RunSpec],
                     traces: list[TraceSpec] | None) -> UpsertResult:
        """Look up and replace runs and traces in one transaction, under the partition's
        lock. A run whose content is unchanged is kept; the others are replaced. Traces not
        converged are all written again (they link to the parent run, replaced whenever the
        folder changed)."""
        with self._mc.write_session(self._store) as session:
            self._lock(session, partition)
            existing = self._find(session, partition)
            have = self._find_traces(session, partition) if traces is not None else []
            if converged(existing, specs) and traces_converged(have, traces):
                return UpsertResult({e.key: e.run_id for e in existing}, 0, 0,
                                    traces=len(have))
            kept = kept_runs(existing, specs)
            old = [e.run_id for e in existing if kept.get(e.key or "") is not e]
            now = int(time.time() * 1000)  # one base: a trace starts when its scene run does
            run_ids = self._replace(session, old, specs, kept, now)
            if traces is not None:
                self._replace_traces(session, [t.trace_id for t in have], traces, run_ids, now)
        return UpsertResult(run_ids, len(specs) - len(kept), len(old), len(traces or []),
                            len(traces or []))

    def archive_partition(self, partition: str) -> int:
        """Runs to the `deleted` stage; their traces stay, tagged `archived=true` and no
        longer the partition's (`partition_key` becomes `align_track.archived_partition`)."""
        mc = self._mc
        with mc.write_session(self._store) as session:
            self._lock(session, partition)
            run_ids = [e.run_id for e in self._find(session, partition)]
            session.query(mc.SqlRun).filter(mc.SqlRun.run_uuid.in_(run_ids)).update(
                {"lifecycle_stage": "deleted", "deleted_time": int(time.time() * 1000)},
                synchronize_session=False)
            trace_ids = [t.trace_id for t in self._find_traces(session, partition)]
            if trace_ids:
                session.query(mc.SqlTraceTag).filter(
                    mc.SqlTraceTag.request_id.in_(trace_ids),
                    mc.SqlTraceTag.key == tr.TAG_PARTITION).update(
                    {"key": tr.TAG_ARCHIVED_PARTITION}, synchronize_session=False)
                session.execute(_insert(mc.SqlTraceTag), [
                    {"request_id": t, "key": tr.TAG_ARCHIVED, "value": "true"}
                    for t in trace_ids])
        return len(run_ids)

    def _find_traces(self, session, partition: str) -> list[ExistingTrace]:
        mc = self._mc
        ids = [r[0] for r in session.query(mc.SqlTraceInfo.request_id)
               .join(mc.SqlTraceTag, mc.SqlTraceTag.request_id == mc.SqlTraceInfo.request_id)
               .filter(mc.SqlTraceTag.key == tr.TAG_PARTITION,
                       mc.SqlTraceTag.value == partition,
                       mc.SqlTraceInfo.experiment_id == int(self.experiment_id)).all()]
        tags = (session.query(mc.SqlTraceTag.request_id, mc.SqlTraceTag.key,
                              mc.SqlTraceTag.value)
                .filter(mc.SqlTraceTag.request_id.in_(ids),
                        mc.SqlTraceTag.key.in_([tr.TAG_KEY, tr.TAG_HASH])).all()) if ids else []
        by_trace: dict[str, dict[str, str]] = {}
        for trace_id, key, value in tags:
            by_trace.setdefault(trace_id, {})[key] = value
        return [ExistingTrace(t, by_trace.get(t, {}).get(tr.TAG_KEY),
                              by_trace.get(t, {}).get(tr.TAG_HASH)) for t in ids]

    def _replace_traces(self, session, old_ids: list[str], specs: list[TraceSpec],
                        run_ids: dict[str, str], now: int) -> None:
        """Delete the partition's traces (and any trace, e.g. an archived one, that holds an
        id about to be written), then insert the planned ones in bulk."""
        mc = self._mc
        rows = mc.TraceRows()
        new_ids = []
        for spec in specs:
            run_id = run_ids.get(spec.run_key, "")
            trace_id = spec.trace_id(self.experiment_id, run_id)
            new_ids.append(trace_id)
            start, end = run_times(spec, now)
            metadata = {"mlflow.sourceRun": run_id} if run_id else {}
            rows.add(trace_id=trace_id, experiment_id=self.experiment_id,
                     artifact_location=self._artifact_location, name=spec.name,
                     inputs=spec.inputs, outputs=spec.outputs, tags=spec.tags,
                     metadata=metadata, feedback=spec.feedback, source_id=tr.SCORE_SOURCE,
                     start_ms=start, end_ms=end, request_preview=spec.request_preview,
                     response_preview=spec.response_preview)
        gone = list(dict.fromkeys(old_ids + new_ids))
        for i in range(0, len(gone), 500):  # below every database's bound-parameter limit
            chunk = gone[i:i + 500]
            for model in mc.TRACE_CHILD_MODELS:
                column = model.trace_id if hasattr(model, "trace_id") else model.request_id
                session.query(model).filter(column.in_(chunk)).delete(synchronize_session=False)
            session.query(mc.SqlTraceInfo).filter(mc.SqlTraceInfo.request_id.in_(chunk)).delete(
                synchronize_session=False)
        for model, data in rows.rows.items():
            if data:
                session.execute(_insert(model), data)

    def _lock(self, session, partition: str) -> None:
        """Held until the transaction ends. Postgres: an advisory lock on (experiment,
        partition), so writers of other partitions go on in parallel. Other SQL stores: a
        write to the experiment's row first, which takes the database's (SQLite) or the row's
        write lock before any read, so two writers queue instead of deadlocking."""
        from sqlalchemy import func, select, update

        mc = self._mc
        if self._store.engine.dialect.name == "postgresql":
            key = int.from_bytes(hashlib.blake2b(
                f"{self.experiment_id}/{partition}".encode(), digest_size=8).digest(),
                "big", signed=True)
            session.execute(select(func.pg_advisory_xact_lock(key)))
        else:
            session.execute(update(mc.SqlExperiment)
                            .where(mc.SqlExperiment.experiment_id == int(self.experiment_id))
                            .values(last_update_time=mc.SqlExperiment.last_update_time))

    def _find(self, session, partition: str) -> list[Existing]:
        mc = self._mc
        runs = (session.query(mc.SqlRun.run_uuid, mc.SqlRun.status)
                .join(mc.SqlTag, mc.SqlTag.run_uuid == mc.SqlRun.run_uuid)
                .filter(mc.SqlTag.key == TAG_PARTITION, mc.SqlTag.value == partition,
                        mc.SqlRun.experiment_id == int(self.experiment_id),
                        mc.SqlRun.lifecycle_stage == "active").all())
        ids = [r.run_uuid for r in runs]
        tags = (session.query(mc.SqlTag.run_uuid, mc.SqlTag.key, mc.SqlTag.value)
                .filter(mc.SqlTag.run_uuid.in_(ids), mc.SqlTag.key.in_([TAG_KEY, TAG_HASH]))
                .all()) if ids else []
        by_run: dict[str, dict[str, str]] = {}
        for run_id, key, value in tags:
            by_run.setdefault(run_id, {})[key] = value
        return [Existing(r.run_uuid, by_run.get(r.run_uuid, {}).get(TAG_KEY),
                         by_run.get(r.run_uuid, {}).get(TAG_HASH), r.status) for r in runs]

    def _replace(self, session, old_run_ids: list[str], specs: list[RunSpec],
                 kept: dict[str, Existing], now: int) -> dict[str, str]:
        """Retire `old_run_ids`, write the planned runs not `kept`, and point kept runs whose
        parent was written anew at it. Run key -> run id."""
        from sqlalchemy import insert

        mc = self._mc
        run_ids = {s.key: kept[s.key].run_id if s.key in kept else uuid.uuid4().hex
                   for s in specs}
        new = [s for s in specs if s.key not in kept]
        batch = batches.new_batch_id()
        rows = _Rows()
        for spec in new:
            tags = _with_parent(spec, run_ids) | {TAG_BATCH: batch}
            mc.validate_run_data(spec.params, spec.metrics, tags, now)
            rows.add(run_ids[spec.key], spec, tags, now)
        for spec in new:  # files first: a crash before commit leaves no run behind
            self._put_artifacts(run_ids[spec.key], spec.artifacts)
        if old_run_ids:
            self._retire(session, old_run_ids, now)
        runs = [self._run_row(run_ids[s.key], s, now) for s in new]
        for model, data in ((mc.SqlRun, runs), (mc.SqlTag, rows.tags),
                            (mc.SqlParam, rows.params), (mc.SqlMetric, rows.metrics),
                            (mc.SqlLatestMetric, rows.metrics)):
            if data:
                session.execute(insert(model), data)
        self._update_kept(session, [s for s in specs if s.key in kept], run_ids, now)
        return run_ids

    def _update_kept(self, session, kept_specs: list[RunSpec], run_ids: dict[str, str],
                     now: int) -> None:
        """What of a kept run follows its partition. Tags, which MLflow's `set_tag` changes
        too: its parent's id (always: the kept parent may be another run than the one it
        pointed at, e.g. one restored by hand), the folder's version (`plan.CURRENT_TAGS`).
        And where the data has no start time, its start and end, counted back from this
        write as the new runs' are, so the scenes stay in order inside their parent's span."""
        updates: dict[tuple[str, str], list[str]] = {}
        for spec in kept_specs:
            if spec.parent_key is not None:
                updates.setdefault((PARENT_TAG, run_ids[spec.parent_key]), []).append(
                    run_ids[spec.key])
            for tag in CURRENT_TAGS:
                if tag in spec.tags:
                    updates.setdefault((tag, spec.tags[tag]), []).append(run_ids[spec.key])
        for (tag, value), runs in updates.items():
            for i in range(0, len(runs), 500):  # below every bound-parameter limit
                self._set_tag(session, runs[i:i + 500], tag, value)
        retimed = [dict(zip(("run_uuid", "start_time", "end_time"),
                            (run_ids[s.key], *run_start_end(s, now)), strict=True))
                   for s in kept_specs if s.base_ms is None]
        if retimed:
            from sqlalchemy import update

            session.execute(update(self._mc.SqlRun), retimed)  # by primary key, in bulk

    def _set_tag(self, session, run_ids: list[str], tag: str, value: str) -> None:
        mc = self._mc
        session.query(mc.SqlTag).filter(mc.SqlTag.run_uuid.in_(run_ids),
                                        mc.SqlTag.key == tag).update(
            {"value": value}, synchronize_session=False)

    def _retire(self, session, run_ids: list[str], now: int) -> None:
        """What `MlflowClient.delete_run` does to replaced runs (lifecycle stage `deleted`,
        a deletion time), after marking their identity tags `REPLACED`."""
        from sqlalchemy import literal

        mc = self._mc
        for i in range(0, len(run_ids), 500):  # below every database's bound-parameter limit
            chunk = run_ids[i:i + 500]
            session.query(mc.SqlTag).filter(mc.SqlTag.run_uuid.in_(chunk),
                                            mc.SqlTag.key.in_([TAG_PARTITION, TAG_KEY])).update(
                {"value": literal(REPLACED) + mc.SqlTag.value}, synchronize_session=False)
            session.query(mc.SqlRun).filter(mc.SqlRun.run_uuid.in_(chunk)).update(
                {"lifecycle_stage": "deleted", "deleted_time": now}, synchronize_session=False)

    def _run_row(self, run_id: str, spec: RunSpec, now: int) -> dict:
        """The row `MlflowClient.create_run` and `set_terminated` leave (tests compare)."""
        start, end = run_start_end(spec, now)
        return {
            "run_uuid": run_id, "name": spec.name, "source_type": "UNKNOWN", "source_name": "",
            "entry_point_name": "", "user_id": "unknown", "status": FINISHED,
            "start_time": start, "end_time": end, "deleted_time": None, "source_version": "",
            "lifecycle_stage": "active", "experiment_id": int(self.experiment_id),
            "artifact_uri": self._artifact_uri(run_id),
        }

    def _artifact_uri(self, run_id: str) -> str:
        return f"{self._artifact_location.rstrip('/')}/{run_id}/artifacts"

    def _local(self) -> bool:
        return urlparse(self._artifact_location).scheme in ("", "file")

    def _put_artifacts(self, run_id: str, artifacts: dict[str, bytes | Path]) -> None:
        """A local or shared folder: written in place. Any other location MLflow knows (s3://,
        mlflow-artifacts://, ...): through MLflow's artifact repository for it."""
        if not artifacts:
            return
        if self._local():
            _write_artifacts(self._artifact_dir(run_id), artifacts)
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        with scratch(_SCRATCH_PREFIX) as tmp:
            _write_artifacts(tmp, artifacts)
            get_artifact_repository(self._artifact_uri(run_id)).log_artifacts(str(tmp))

    def _artifact_dir(self, run_id: str) -> Path:
        from mlflow.utils.file_utils import local_file_uri_to_path

        return Path(local_file_uri_to_path(self._artifact_location)) / run_id / "artifacts"


class _Rows:
    """Row dicts for executemany inserts, collected across a partition's runs."""

    def __init__(self) -> None:
        self.tags: list[dict] = []
        self.params: list[dict] = []
        self.metrics: list[dict] = []

    def add(self, run_id: str, spec: RunSpec, tags: dict[str, str], now: int) -> None:
        self.tags += [{"run_uuid": run_id, "key": k, "value": v} for k, v in tags.items()]
        self.params += [{"run_uuid": run_id, "key": k, "value": v}
                        for k, v in spec.params.items()]
        self.metrics += [{"run_uuid": run_id, "key": k, "value": v, "timestamp": now,
                          "step": 0, "is_nan": False} for k, v in spec.metrics.items()]


_HTTP_THREADS = 4
_SCRATCH_PREFIX = "align-track-mlflow-"  # the artifact files of a partition on their way
_TRACES_PER_REQUEST = 100  # one request per run, mostly: 5 a request measured 2x slower
_SETTLE_ATTEMPTS = 10  # rounds that write or delete; waiting for a live writer is free
_WAIT_SECONDS = 0.5


def _batches(existing: list[Existing], specs: list[RunSpec]) -> dict[str, tuple[bool, bool]]:
    """Each batch: (complete, plausible). Plausible: every run that has its key so far holds
    a planned key once with the planned content (a batch that may still become complete)."""
    wanted = {s.key: s.content_hash for s in specs}
    groups: dict[str, list[Existing]] = {}
    for run in existing:
        groups.setdefault(run.batch, []).append(run)
    out = {}
    for batch, runs in groups.items():
        keyed = [r.key for r in runs if r.key is not None]
        plausible = (len(keyed) == len(set(keyed))
                     and all(wanted.get(r.key) == r.content_hash for r in runs if r.key))
        out[batch] = (converged(runs, specs), plausible)
    return out


class _ApiBackend(_Backend):
    """The public batched API: one create, a few log_batch calls and one terminate per run."""

    def __init__(self, uri: str, experiment: str, artifact_root: str | None):
        from mlflow import MlflowClient

        from align_track_pipeline.core.trackers.mlflow import compat as mc

        self._mc, self._uri = mc, uri
        check_reachable(uri)  # at once, not after MLflow's retries
        # MLflow's client creates or migrates a SQL store's schema when it opens it
        with creation_lock(uri):
            self._client = MlflowClient(tracking_uri=uri)
            found = self._client.get_experiment_by_name(experiment)
            if found is None:
                with suppress(MlflowException):  # another writer created it meanwhile
                    self._client.create_experiment(experiment, artifact_location=(
                        _experiment_artifacts(artifact_root, experiment)))
                found = self._client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id
        self._artifact_location = found.artifact_location

    def experiment_tag(self, key: str) -> str | None:
        return self._client.get_experiment(self.experiment_id).tags.get(key)

    def set_experiment_tag(self, key: str, value: str) -> None:
        self._client.set_experiment_tag(self.experiment_id, key, value)

    def upsert(self, partition: str, specs: list[RunSpec],
               traces: list[TraceSpec] | None) -> UpsertResult:
        """The runs, then the traces (which link to the runs' ids)."""
        result = self._upsert_runs(partition, specs)
        if traces is None:
            return result
        written, count, run_ids = self._settle_traces(partition, specs, traces,
                                                      result.run_ids)
        return UpsertResult(run_ids, result.written, result.deleted, written, count)

    def _settle_traces(self, partition: str, runs: list[RunSpec], specs: list[TraceSpec],
                       run_ids: dict[str, str]) -> tuple[int, int, dict[str, str]]:
        """Read back, delete what is not planned, write what is missing, until a read finds
        exactly the planned traces, each with all its assessments. Trace ids are derived
        from their content and run: writers of the same plan write the same traces. From the
        second round on, the plan follows the runs the partition holds then: a concurrent
        writer may have kept another batch of runs since this one saw them converged, and
        traces linked to the retired runs would be deleted by every other writer, for ever."""
        written = 0
        for attempt in range(_SETTLE_ATTEMPTS):
            if attempt:
                run_ids = self._current_run_ids(partition, runs)
            planned = {t.trace_id(self.experiment_id, run_ids.get(t.run_key, "")): t
                       for t in specs}
            found = self._find_traces(partition)
            extra = [t for t in found if t not in planned]
            missing = [t for t in planned if t not in found]
            # Writers of one trace may both log its scores: every writer keeps the first of
            # each name, so they all delete the same copies; a score not there yet is added.
            twice = [(t, a) for t, given in found.items() for a in _repeated(given)]
            unscored = [(t, name, value) for t, given in found.items() if t in planned
                        for name, value in planned[t].feedback.items()
                        if name not in {n for n, _ in given}]
            if not (extra or missing or twice or unscored):
                return written, len(found), run_ids
            for i in range(0, len(extra), 100):
                with suppress(MlflowException):  # another writer deleted them meanwhile
                    self._client.delete_traces(self.experiment_id, trace_ids=extra[i:i + 100])
            for trace_id, assessment_id in twice:
                with suppress(MlflowException):  # another writer deleted it meanwhile
                    self._mc.delete_assessment(self._uri, trace_id, assessment_id)
            for score in unscored:
                self._feedback(*score)
            if missing:
                self._write_traces({t: planned[t] for t in missing}, run_ids)
                written += len(missing)
        raise RuntimeError(f"partition {partition}: its traces did not read back as written; "
                           "the next run repairs it")

    def _current_run_ids(self, partition: str, runs: list[RunSpec]) -> dict[str, str]:
        """Key -> run id of the batch the partition holds now (settled again if another
        writer is changing it)."""
        existing = self._find(partition)
        if converged(existing, runs):
            return {e.key: e.run_id for e in existing}
        return self._upsert_runs(partition, runs).run_ids

    def _find_traces(self, partition: str) -> dict[str, list[tuple[str, str]]]:
        """The partition's traces: id -> its assessments' (name, id), oldest first."""
        out, token = {}, None
        while True:
            page = self._client.search_traces(
                locations=[self.experiment_id], max_results=500, page_token=token,
                filter_string=f"tag.`{tr.TAG_PARTITION}` = '{quote(partition)}'",
                include_spans=False)
            out |= {t.info.trace_id: [(a.name, a.assessment_id) for a in sorted(
                t.info.assessments, key=lambda a: (a.create_time_ms or 0, a.assessment_id))]
                for t in page}
            token = page.token
            if not token:
                return out

    def _write_traces(self, traces: dict[str, TraceSpec], run_ids: dict[str, str]) -> None:
        """A server: OTLP requests of up to 100 traces of one run each. Any other store:
        through MLflow's tracing client, one trace at a time. Then the scores."""
        from concurrent.futures import ThreadPoolExecutor

        mc = self._mc
        now = int(time.time() * 1000)
        if is_sql(self._uri):
            self._store_traces(traces, run_ids, now)
            for trace_id, spec in traces.items():
                for name, value in spec.feedback.items():
                    self._feedback(trace_id, name, value)
            return
        by_run: dict[str, list[dict]] = {}
        for trace_id, spec in traces.items():
            start, end = run_times(spec, now)
            by_run.setdefault(run_ids.get(spec.run_key, ""), []).append(mc.root_span_dict(
                trace_id, self.experiment_id, spec.name, spec.inputs, spec.outputs,
                start * 1_000_000, end * 1_000_000, spec.tags))
        requests = [(run_id, spans[i:i + _TRACES_PER_REQUEST])
                    for run_id, spans in by_run.items()
                    for i in range(0, len(spans), _TRACES_PER_REQUEST)]
        scores = [(t, k, v) for t, spec in traces.items() for k, v in spec.feedback.items()]
        with ThreadPoolExecutor(_HTTP_THREADS) as pool:  # the server's database is the limit
            list(pool.map(lambda r: mc.otlp_export(self._uri, self.experiment_id, *r),
                          requests))
            fault_point("mlflow.traces_sent")
            list(pool.map(lambda s: self._feedback(*s), scores))

    def _store_traces(self, traces: dict[str, TraceSpec], run_ids: dict[str, str],
                      now: int) -> None:
        for trace_id, spec in traces.items():
            run_id = run_ids.get(spec.run_key, "")
            start, end = run_times(spec, now)
            self._mc.store_trace(
                self._uri, self.experiment_id, trace_id, self._mc.root_span_dict(
                    trace_id, self.experiment_id, spec.name, spec.inputs, spec.outputs,
                    start * 1_000_000, end * 1_000_000),
                start_ms=start, end_ms=end, tags=spec.tags,
                metadata={"mlflow.sourceRun": run_id} if run_id else {},
                request_preview=spec.request_preview, response_preview=spec.response_preview)

    def _feedback(self, trace_id: str, name: str, value: float) -> None:
        with suppress(MlflowException):  # the trace deleted by another writer: next round
            self._mc.log_feedback(self._uri, trace_id, name, value, tr.SCORE_SOURCE)

    def _upsert_runs(self, partition: str, specs: list[RunSpec]) -> UpsertResult:
        """Write, then check, until the partition holds exactly one complete batch. Every
        writer keeps the same batch (see `batches`) and returns only once it saw the partition
        converged, so the last writer to return leaves it converged."""
        written, deleted, actions = 0, 0, 0
        refused: MlflowException | None = None  # why the last write failed, if it did
        watch = batches.Watch()
        while actions < _SETTLE_ATTEMPTS:
            existing = self._find(partition)
            if converged(existing, specs):
                return UpsertResult({e.key: e.run_id for e in existing}, written, deleted)
            sizes = Counter(e.batch for e in existing)
            kept = batches.keeper(_batches(existing, specs), watch, sizes)
            losers = [e.run_id for e in existing if e.batch != kept]
            if losers:
                self._retire(partition, [e for e in existing if e.batch != kept])
                deleted += len(losers)
                actions += 1
            elif kept is None:
                refused = None
                try:
                    with batches.writing(batches.new_batch_id()) as batch:
                        self._create(specs, batch)
                except MlflowException as exc:  # another writer deleted its runs, or refused
                    refused = exc
                written = len(specs)  # a batch is the partition's runs, all written
                actions += 1
            else:  # another live writer is writing the batch everyone keeps
                time.sleep(_WAIT_SECONDS)
        if refused is not None:  # the last write failed: say why, not "other writers"
            raise RuntimeError(f"partition {partition}: the store refused its runs: {refused}; "
                               "the next run tries again") from refused
        raise RuntimeError(f"partition {partition}: other writers kept changing its runs; "
                           "the next run repairs it")

    def archive_partition(self, partition: str) -> int:
        """Runs soft-deleted; traces tagged as on a SQL store."""
        run_ids = [e.run_id for e in self._find(partition)]
        self._delete(run_ids)
        for trace_id in self._find_traces(partition):
            with suppress(MlflowException):
                self._client.set_trace_tag(trace_id, tr.TAG_ARCHIVED, "true")
                self._client.set_trace_tag(trace_id, tr.TAG_ARCHIVED_PARTITION, partition)
                self._client.delete_trace_tag(trace_id, tr.TAG_PARTITION)
        return len(run_ids)

    def _find(self, partition: str) -> list[Existing]:
        out, token = [], None
        while True:
            page = self._client.search_runs(
                [self.experiment_id], f"tags.`{TAG_PARTITION}` = '{quote(partition)}'",
                max_results=1000, page_token=token)
            out += [Existing(r.info.run_id, r.data.tags.get(TAG_KEY), r.data.tags.get(TAG_HASH),
                             r.info.status, r.data.tags.get(TAG_BATCH, "")) for r in page]
            token = page.token
            if not token:
                return out

    def _delete(self, run_ids: list[str]) -> None:
        for run_id in run_ids:  # the public API's delete is a soft delete (restorable)
            with suppress(MlflowException):  # already deleted by another writer's settle
                self._client.delete_run(run_id)

    def _retire(self, partition: str, runs: list[Existing]) -> None:
        """Replaced runs: their identity tags marked `REPLACED`, then deleted."""
        for run in runs:
            tags = {TAG_PARTITION: partition} | ({TAG_KEY: run.key} if run.key else {})
            with suppress(MlflowException):  # already deleted by another writer's settle
                self._client.log_batch(run.run_id, tags=[RunTag(k, REPLACED + v)
                                                         for k, v in tags.items()])
        self._delete([run.run_id for run in runs])

    def _create(self, specs: list[RunSpec], batch: str) -> dict[str, str]:
        """The batch's runs, several requests in flight: parents, then their children (a
        child's tag names its parent's id), each created with its data; then the partition's
        artifacts; then each run ends. A run is FINISHED only once its data and artifacts are
        stored, so a write cut short never reads back converged."""
        from concurrent.futures import ThreadPoolExecutor

        run_ids: dict[str, str] = {}
        artifact_uris: dict[str, str] = {}
        now = int(time.time() * 1000)  # one base for the batch: its runs keep their order
        with ThreadPoolExecutor(_HTTP_THREADS) as pool:
            for generation in _generations(specs):
                started = list(pool.map(lambda s: self._start(s, batch, run_ids, now),
                                        generation))
                for spec, (run_id, artifact_uri) in zip(generation, started, strict=True):
                    run_ids[spec.key], artifact_uris[run_id] = run_id, artifact_uri
            self._upload(pool, {run_ids[s.key]: s.artifacts for s in specs}, artifact_uris)
            list(pool.map(lambda s: self._end(run_ids[s.key], s, now), specs))
        return run_ids

    def _end(self, run_id: str, spec: RunSpec, now: int) -> None:
        """FINISHED, at the end the data gives; without one, no end time (`run_start_end`):
        `set_terminated` would stamp the time of the write."""
        end = run_start_end(spec, now)[1]
        if end is None:
            self._client.update_run(run_id, FINISHED)  # a get_run more, for these runs only
        else:
            self._client.set_terminated(run_id, FINISHED, end_time=end)

    def _start(self, spec: RunSpec, batch: str, run_ids: dict[str, str],
               now: int) -> tuple[str, str]:
        """One run created with its params, metrics and tags: its id and artifact URI. The
        tags go with the creation (one insert on the server; through log_batch each tag is a
        statement of its own), so the run carries its partition, batch and key from the
        start; params and metrics follow in log_batch calls of at most 100 params."""
        from mlflow.entities import Metric, Param

        tags = _with_parent(spec, run_ids) | {TAG_BATCH: batch}
        del tags["mlflow.runName"]  # given as run_name
        run = self._client.create_run(self.experiment_id, run_name=spec.name,
                                      start_time=run_times(spec, now)[0], tags=tags)
        fault_point("mlflow.run_created")
        params = [Param(k, v) for k, v in spec.params.items()]
        metrics = [Metric(k, v, now, 0) for k, v in spec.metrics.items()]
        for i in range(0, max(len(params), 1 if metrics else 0), 100):
            self._client.log_batch(run.info.run_id, metrics=metrics if i == 0 else [],
                                   params=params[i:i + 100])
        return run.info.run_id, run.info.artifact_uri

    def _upload(self, pool, artifacts: dict[str, dict[str, bytes | Path]],
                artifact_uris: dict[str, str]) -> None:
        """Every artifact of the partition, one file per request in flight (a tracking
        server's proxy takes one file a request; a folder is written in place). Runs under the
        experiment's location (MLflow's layout, `<location>/<run id>/artifacts`) share one
        repository for the partition, so no run's location is looked up (on a verified MLflow:
        `compat.artifact_repository`; on any other, MlflowClient per file)."""
        repos: dict[str, object] = {}
        base = self._artifact_location.rstrip("/")
        with scratch(_SCRATCH_PREFIX) as tmp:  # in memory where there is room: see `scratch`
            uploads = []
            for run_id, files in artifacts.items():
                if not files:
                    continue
                _write_artifacts(tmp / run_id, files)
                if not mlflow_internals():  # the client looks each run's location up
                    uploads += [(partial(self._client.log_artifact, run_id),
                                 str(tmp / run_id / rel),
                                 None if Path(rel).parent == Path(".") else str(Path(rel).parent))
                                for rel in files]
                    continue
                own = artifact_uris[run_id].rstrip("/")
                root, prefix = ((base, f"{run_id}/artifacts") if own == f"{base}/{run_id}/artifacts"
                                else (own, ""))
                if root not in repos:
                    repos[root] = self._mc.artifact_repository(root, self._uri)
                for rel in files:
                    folder = "/".join(x for x in (prefix, str(Path(rel).parent))
                                      if x not in ("", "."))
                    uploads.append((repos[root].log_artifact, str(tmp / run_id / rel),
                                    folder or None))
            list(pool.map(lambda u: u[0](u[1], u[2]), uploads))


def _generations(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """The runs in rounds: each run comes after its parent's round."""
    done: set[str] = set()
    rounds, left = [], list(specs)
    while left:
        ready = [s for s in left if s.parent_key is None or s.parent_key in done]
        if not ready:
            raise ValueError(f"run {left[0].key}: its parent {left[0].parent_key} is not planned")
        rounds.append(ready)
        done |= {s.key for s in ready}
        left = [s for s in left if s.key not in done]
    return rounds


def _insert(model):
    from sqlalchemy import insert

    return insert(model)


def run_times(spec: RunSpec | TraceSpec, now: int) -> tuple[int, int]:
    """A run's start and end in epoch ms: from the data, or counted from the write time."""
    return epoch_span(spec.base_ms, spec.span, now)


def run_start_end(spec: RunSpec, now: int) -> tuple[int, int | None]:
    """`run_times`, without an end for a run whose duration the data lacks: MLflow then shows
    no duration, where an end at its start read as a measured 0 ms (the fastest run)."""
    start, end = run_times(spec, now)
    return start, end if spec.timed else None


def _with_parent(spec: RunSpec, run_ids: dict[str, str]) -> dict[str, str]:
    tags = dict(spec.tags)
    if spec.parent_key is not None:
        tags[PARENT_TAG] = run_ids[spec.parent_key]
    return tags


def _write_artifacts(root: Path, artifacts: dict[str, bytes | Path]) -> None:
    """Write a run's artifacts; a file of the run directory is copied with its credentials
    masked, as the configs are (`redact_file`)."""
    for rel, data in artifacts.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else redact_file(data.name,
                                                                          data.read_bytes()))


def _repeated(assessments: list[tuple[str, str]]) -> list[str]:
    """The ids of the assessments whose name an older one of the same trace has."""
    seen: set[str] = set()
    repeated = []
    for name, assessment_id in assessments:
        if name in seen:
            repeated.append(assessment_id)
        seen.add(name)
    return repeated


def _experiment_artifacts(artifact_root: str | None, experiment: str) -> str | None:
    if artifact_root is None:
        return None
    return f"{artifact_root.rstrip('/')}/{experiment}"


def prepare_store(uri: str, artifact_root: str | None) -> None:
    """Create or migrate a SQL store's schema now, as a writer would and under the writers'
    lock, for a process about to open it without that lock: `mlflow server` (`align-track
    mlflow-ui`) migrates what it opens, and two migrations of one store at once clash."""
    with creation_lock(uri):
        if mlflow_internals():
            from align_track_pipeline.core.trackers.mlflow import compat as mc

            mc.open_sql_store(uri, artifact_root or DEFAULT_ARTIFACTS).engine.dispose()
        else:
            from mlflow import MlflowClient

            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


@contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """Serialize creating or migrating the schema and the experiment across processes: a lock
    file beside a SQLite database, a session advisory lock on Postgres; nothing for a tracking
    server (it migrates its own store) or another database."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if not is_sql(uri):
        yield
        return
    url = make_url(uri)
    if url.get_backend_name() == "sqlite" and url.database:
        with file_lock(Path(url.database).with_suffix(".lock")):
            yield
        return
    if url.get_backend_name() != "postgresql":
        yield
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(7150734)"))  # any fixed key
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(7150734)"))
    finally:
        engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    """Wait for the write lock; and keep the write-ahead log at most `WAL_KEPT` bytes after a
    checkpoint (SQLite keeps its largest size otherwise, e.g. while an `mlflow ui` holds a
    connection open and the log is never removed)."""
    dbapi_conn.execute("PRAGMA busy_timeout=30000")
    dbapi_conn.execute(f"PRAGMA journal_size_limit={WAL_KEPT}")


WAL_KEPT = 64 * 1024 * 1024
