"""Every Dagster internal the pipeline relies on, each in one small function.

Dagster is pinned (uv.lock). Nothing else in the package imports `dagster._*` or calls
event-log storage methods: they go through here (those only tests use: tests/dagster_probes.py),
and tests/defs/test_dagster_compat.py pins each one, so a Dagster upgrade that moves one fails
there, loudly, by name. Private modules are imported where they are used, not at import, and on
a Dagster version the pipeline was not verified on (`verified.dagster_internals`) the runs plan
one event per partition, as Dagster does by default, and mark their failed partitions without
private events.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager

import dagster as dg

from align_track_pipeline.core.verified import dagster_internals

# Tags Dagster writes on a materialization it makes itself. The assets here log their
# partitions one by one, so they write them, and Dagster's staleness reads them as its own.
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
MATERIALIZATION = dg.DagsterEventType.ASSET_MATERIALIZATION
OBSERVATION = dg.DagsterEventType.ASSET_OBSERVATION
PLANNED = dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED


def input_tags(asset: str, data_version: str, storage_id: int) -> dict[str, str]:
    """The provenance tags of one upstream input (its data version and event pointer)."""
    return {f"dagster/input_data_version/{asset}": data_version,
            f"dagster/input_event_pointer/{asset}": str(storage_id)}


def latest_tag_by_partition(instance: dg.DagsterInstance, asset: str,
                            event: dg.DagsterEventType, tag: str,
                            partitions: Collection[str] | None = None) -> dict[str, str]:
    """Partition -> `tag` of its latest event of this type, in one query (the per-partition
    tag index Dagster's own staleness reads); of `partitions` only, when given."""
    tags = instance.event_log_storage.get_latest_tags_by_partition(
        dg.AssetKey(asset), event, [tag], asset_partitions=_few(partitions))
    return {key: t[tag] for key, t in tags.items() if tag in t}


def latest_storage_ids(instance: dg.DagsterInstance, asset: str, event: dg.DagsterEventType,
                       partitions: Collection[str] | None = None) -> dict[str, int]:
    """Partition -> storage id of its latest event of this type, in one query; of
    `partitions` only, when given."""
    found = instance.event_log_storage.get_latest_storage_id_by_partition(
        dg.AssetKey(asset), event, partitions=_few(partitions))
    return dict(found)


FEW_PARTITIONS = 200  # named in a query's IN list; more: every partition is read


def _few(partitions: Collection[str] | None) -> list[str] | None:
    """`partitions` as a query's filter, or None (all of them) when there are none or many:
    a batch of a few among thousands reads only its own rows."""
    if partitions is None or not 0 < len(partitions) <= FEW_PARTITIONS:
        return None
    return sorted(partitions)


def failed_partitions(instance: dg.DagsterInstance, asset: str) -> set[str]:
    """Partitions whose latest planned materialization never happened (the attempt failed or
    is in progress): what Dagster's partition status marks failed once the run ended."""
    return set(failed_attempt_runs(instance, asset))


def failed_attempt_runs(instance: dg.DagsterInstance, asset: str) -> dict[str, str]:
    """The same partitions -> the run id of that attempt (where its error is told)."""
    storage = instance.event_log_storage
    attempts = storage.get_latest_asset_partition_materialization_attempts_without_materializations(
        dg.AssetKey(asset))
    return {key: run_id for key, (run_id, _storage_id) in attempts.items()}


def partitions_in_progress(instance: dg.DagsterInstance, asset: str) -> set[str]:
    """Partitions a queued or running run is to materialize: their latest planned
    materialization has not happened yet, and its run has not finished."""
    attempts = failed_attempt_runs(instance, asset)
    if not attempts:
        return set()
    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.CANCELED}
    runs = instance.get_runs(dg.RunsFilter(run_ids=list(set(attempts.values()))))
    busy = {run.run_id for run in runs if run.status not in finished}
    return {key for key, run in attempts.items() if run in busy}


def record_failed_attempt(context: dg.AssetExecutionContext, asset: dg.AssetKey,
                          partition: str) -> None:
    """Record, in this run, a planned materialization of the partition that will not happen.

    A batch run started under `one_planned_event_per_asset` stores one planned event for its
    whole range, so Dagster cannot tell which partitions of a failed run failed. With this
    event for each partition that failed, Dagster marks exactly those failed (in the UI, for
    the automation and `status`) when the run fails; no partition is run twice to get there.
    """
    record_failed_attempts(context.instance, context.run.run_id, context.job_name,
                           str(context.op_execution_context.node_handle), asset,
                           [partition])


def record_failed_attempts(instance: dg.DagsterInstance, run_id: str, job_name: str,
                           step_key: str, asset: dg.AssetKey, partitions: list[str]) -> None:
    """The same for partitions of a run whose step failed as a whole (e.g. its store was
    unreachable), recorded from outside the run. Nothing to record on an unverified Dagster:
    its runs plan each partition, so Dagster marks them failed itself."""
    if not dagster_internals():
        return
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent

    for partition in partitions:
        event = DagsterEvent.build_asset_materialization_planned_event(
            job_name, step_key, AssetMaterializationPlannedData(asset, partition=partition))
        instance.report_dagster_event(event, run_id=run_id)


# Dagster reads this variable on every run it starts (undocumented; pinned by a test).
_SUBSET_PLANNED_EVENTS = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


@contextmanager
def one_planned_event_per_asset() -> Iterator[None]:
    """Runs started inside store one "materialization planned" event per asset for their whole
    partition range instead of one per partition (about 10 ms each on SQLite). The assets then
    mark their failed partitions themselves (`record_failed_attempt`). Used only around the
    CLI's own in-process runs, never by definitions the daemon loads. On an unverified
    Dagster, nothing changes: one planned event per partition."""
    if not dagster_internals():
        yield
        return
    old = os.environ.get(_SUBSET_PLANNED_EVENTS)
    os.environ[_SUBSET_PLANNED_EVENTS] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_SUBSET_PLANNED_EVENTS, None)
        else:
            os.environ[_SUBSET_PLANNED_EVENTS] = old


def evaluated_check_outputs(context: dg.AssetExecutionContext) -> list[dg.Output]:
    """One empty output per check the run selected, to yield after the checks' per-partition
    evaluations were logged as events. Dagster expects each selected check's output and
    otherwise logs "did not yield or return expected outputs"; the output of a check records
    no event of its own (the evaluations are the logged ones)."""
    selected = context.selected_asset_check_keys
    return [dg.Output(None, output_name=name)
            for name, spec in context.assets_def.check_specs_by_output_name.items()
            if spec.key in selected]


def unblocking_output(output_name: str) -> dg.Output:
    """An output that records no asset event, only that the step produced it, so a downstream
    step of the same run starts instead of being skipped. The assets log their partitions one
    by one; a plain output would add a second, implicit materialization (without metadata) of
    every partition of the run. Dagster's own observable source assets yield this marker."""
    from dagster._core.definitions.source_asset import (
        SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION,
    )

    return dg.Output(None, output_name=output_name,
                     metadata={SYSTEM_METADATA_KEY_SOURCE_ASSET_OBSERVATION: True})


@contextmanager
def observations_in_one_write(instance: dg.DagsterInstance) -> Iterator[None]:
    """Asset observations logged inside are stored together when the block ends (or before
    any other event, which keeps the order), in one transaction per SQLite file, instead of
    two transactions, four connections and four engines each (about 8 ms an observation: 80 s
    for a first observation of 10,000 folders). Other storages (Postgres) are left as they
    are. Observations not yet stored when the run dies are lost: observing again records
    them."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    storage = instance.event_log_storage
    if not dagster_internals() or not isinstance(storage, SqliteEventLogStorage):
        yield
        return
    pending: list = []
    one_by_one = storage.store_event

    def store_event(event) -> None:
        if event.is_dagster_event and event.dagster_event_type == OBSERVATION:
            pending.append(event)
            return
        _store_observations(storage, pending)
        one_by_one(event)

    storage.store_event = store_event  # this storage object only, for this block
    try:
        yield
    finally:
        del storage.store_event
        _store_observations(storage, pending)


def _store_observations(storage, pending: list) -> None:
    """What `SqliteEventLogStorage.store_event` does for each asset event, for all at once
    (those pending now: another thread's event may add more meanwhile)."""
    events = pending[:]
    del pending[:len(events)]
    if not events:
        return
    inserts = [storage.prepare_insert_event(event) for event in events]
    for run_id in dict.fromkeys(event.run_id for event in events):
        with storage.run_connection(run_id) as conn:
            for event, insert in zip(events, inserts, strict=True):
                if event.run_id == run_id:
                    conn.execute(insert)
    with storage.index_transaction() as conn:
        ids = [conn.execute(insert).inserted_primary_key[0] for insert in inserts]
        storage._store_asset_event_tags(conn, events, ids)
        for event, event_id in zip(events, ids, strict=True):
            storage._store_asset_event(conn, event, event_id)


def release_pool_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    """Free every concurrency-pool slot a run holds."""
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)


def pool_holders(instance: dg.DagsterInstance, pool: str) -> tuple[int | None, list[str]]:
    """The pool's limit (None: unlimited) and the run ids holding its slots now."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    return info.limit, sorted(info.active_run_ids)


def set_pool_limit(instance: dg.DagsterInstance, pool: str, limit: int) -> None:
    """Set a pool's limit in the instance (what `dagster instance concurrency set` does): it
    wins over dagster.yaml's `default_limit`, for the daemon's runs and the CLI's alike."""
    instance.event_log_storage.set_concurrency_slots(pool, limit)


def last_event_id(instance: dg.DagsterInstance) -> int:
    """The id of the newest stored event: unchanged means nothing was written."""
    return instance.event_log_storage.get_maximum_record_id() or 0


def silence_owners_warning() -> None:
    """For the whole process: Dagster 1.13 warns about its own beta `owners` parameter whenever
    it copies a sensor (binding resources), in the UI's code server and the CLI alike; noise a
    user cannot act on."""
    warnings.filterwarnings("ignore", message="Parameter `owners`", category=dg.BetaWarning)


def silence_mixed_backfill_policy_warning(job_name: str) -> None:
    """For the whole process: Dagster warns, whenever it resolves a job whose assets have
    different backfill policies, that a backfill of it would take the smallest. `job_name`
    mixes the folders' observation (no policy) with the batched assets, and is never
    backfilled: its runs come from the discovery sensor, over a key or a range."""
    warnings.filterwarnings("ignore", message=f"Asset job {job_name} materializes assets with "
                            "varying BackfillPolicies", category=UserWarning)
