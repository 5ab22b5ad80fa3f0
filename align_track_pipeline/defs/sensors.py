"""Discovery: keep the dynamic partitions in step with the tree and ingest what may have changed
(stat calls only; the hashing happens in the run it requests); and have the tables of a
partition rewritten when its Parquet file is missing or unreadable.

The fast path: a new or changed folder gets one `ingest_folders` run that observes it, writes its
tables and logs it to every tracker (seconds after the tick). Many new or changed folders at once
go the batched way instead: an observation, then the automation's runs of up to
`ALIGN_TRACK_PARTITIONS_PER_RUN` partitions each, in parallel. The automation also catches
whatever the sensor missed (with the sensor off, the nightly observation feeds it).
"""

from pathlib import Path

import dagster as dg

from align_track_pipeline.core.guard import (
    Refusal,
    check_apart,
    check_first_tree,
    check_tree,
    remember_tree,
    removal_refusal,
    removals,
)
from align_track_pipeline.core.source.discovery import (
    CHANGED_RUNS_MAX,
    TreeUnreadable,
    no_collector_pauses,
)
from align_track_pipeline.core.tables.health import described
from align_track_pipeline.core.verified import dagster_internals
from align_track_pipeline.defs.automation import discovery_seconds
from align_track_pipeline.defs.cleanup import cleanup_config, cleanup_removed
from align_track_pipeline.defs.dagster_compat import (
    MATERIALIZATION,
    latest_storage_ids,
    partitions_in_progress,
)
from align_track_pipeline.defs.folders import (
    folders_to_observe,
    observation_request,
    observe_job,
    run_key,
)
from align_track_pipeline.defs.freshness import INGEST_FOLDERS_JOB, broken_table_files
from align_track_pipeline.defs.jobs import TABLES_JOB, ingest_folders_job, tables_job
from align_track_pipeline.defs.partitions import (
    RANGE_END,
    RANGE_START,
    experiment_partitions,
    partitions_per_run,
)
from align_track_pipeline.defs.resources import DataStore, ExperimentTree, Trackers
from align_track_pipeline.defs.store_checks import store_requests
from align_track_pipeline.defs.store_repairs import retry_note
from align_track_pipeline.defs.tables import TABLE_ASSETS

FIRST = {"dagster/priority": "10"}


@dg.sensor(jobs=[observe_job, cleanup_removed, tables_job, ingest_folders_job],
           default_status=dg.DefaultSensorStatus.RUNNING,
           minimum_interval_seconds=discovery_seconds())
def experiment_folder_sensor(
    context: dg.SensorEvaluationContext, tree: ExperimentTree, store: DataStore,
    trackers: Trackers,
) -> dg.SensorResult | dg.SkipReason:
    """Adds a partition per new run directory, deletes the partitions whose folder is gone
    (requesting the cleanup of their data), requests the ingest of the new folders and of those
    whose stat data changed (see the module's docstring), and a tables run for each partition
    whose Parquet file is missing or unreadable (an ingest would not do: its folder's version
    did not change), and runs that write again what a tracker's lost or rebuilt store held
    (`store_checks`). State lives in the instance, the fingerprint cache and the data dir's
    `state/` folder, not a cursor.

    The same guards as `align-track ingest`: another tree than the data dir's, or one that
    cannot be listed, does nothing; partitions below an unreadable folder are kept; removals
    beyond the bound are logged and skipped (the rest of the tick goes on). The collector
    pauses are off for the tick (`no_collector_pauses`)."""
    with no_collector_pauses():
        return _tick(context, tree, store, trackers)


def _tick(context: dg.SensorEvaluationContext, tree: ExperimentTree, store: DataStore,
          trackers: Trackers) -> dg.SensorResult | dg.SkipReason:
    root, data = Path(tree.root).resolve(), Path(store.data_dir)
    order = context.instance.get_dynamic_partitions(experiment_partitions.name)
    registered = set(order)
    known = registered or store.parquet.stored_keys()  # an instance lost: what the tables hold
    try:
        check_apart(data.resolve(), root)  # as the tree: a relative or linked data dir too
        check_tree(data, root)
        scan = tree.scan()
        check_first_tree(root, len(known), len(scan.run_dirs), scan.unreadable)
    except (Refusal, TreeUnreadable) as exc:  # e.g. an unmounted share: remove nothing, wait
        return dg.SkipReason(str(exc))
    run_dirs = scan.run_dirs
    on_disk = {r.key for r in run_dirs}
    plan = removals(known, scan)
    notes = [f"kept {len(plan.hidden)} partitions that cannot be read: "
             + "; ".join(sorted(set(plan.hidden.values())))] if plan.hidden else []
    gone = plan.gone
    refusal = removal_refusal(root, len(known), gone, len(run_dirs))
    if refusal:
        notes.append(refusal)
        gone = []
    else:
        remember_tree(data, root)
    for note in notes:
        context.log.warning(note)
    new = sorted(on_disk - registered)  # the stored keys count for removals only
    suspects = folders_to_observe(context.instance, run_dirs, store)
    if suspects:  # a run already on its way observes them: no second one
        busy = partitions_in_progress(context.instance, "scenes")
        suspects = {k: s for k, s in suspects.items() if k not in busy}
    repairs = repair_requests(context, store, sorted(on_disk & registered))
    kept = registered - set(gone)
    again = store_requests(context.instance, trackers.all, data,
                           [k for k in order if k in kept], on_disk)
    for note in filter(None, map(retry_note, again)):
        context.log.warning(note)
    repairs += again
    if not (new or gone or suspects or repairs):
        return dg.SkipReason(" ".join(notes) or
                             f"{len(on_disk)} folders, none new, changed or removed")
    return _result(new, gone, suspects, repairs)


def _result(new: list[str], gone: list[str], suspects: dict[str, str],
            repairs: list[dg.RunRequest]) -> dg.SensorResult:
    requests, partition_requests = list(repairs), []
    if new:
        partition_requests.append(experiment_partitions.build_add_request(new))
    if gone:
        partition_requests.append(experiment_partitions.build_delete_request(gone))
        requests.append(dg.RunRequest(
            job_name=cleanup_removed.name,
            run_key=run_key("cleanup", gone),
            run_config=cleanup_config(gone),
        ))
    requests += ingest_requests(new, suspects)
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=partition_requests)


def ingest_requests(new: list[str], suspects: dict[str, str]) -> list[dg.RunRequest]:
    """One `ingest_folders` run over the new folders (added together, they are a contiguous
    range), one per changed known folder; beyond `partitions_per_run()` new or
    `CHANGED_RUNS_MAX` changed ones, an observation, and the automation's batches. Run keys
    hold the folders' stat data: the same state is ingested once. On a Dagster version the
    fast path was not verified on, everything goes the batched way."""
    requests, batched = [], {}
    changed = sorted(set(suspects) - set(new))
    if not dagster_internals():  # its tracker steps need `unblocking_output`: batched way
        batched = {k: suspects.get(k, "") for k in [*new, *changed]}
        return [observation_request("observe", batched)] if batched else []
    if len(new) <= partitions_per_run():
        requests += [_ingest(new, suspects)] if new else []
    else:
        batched |= {k: suspects.get(k, "") for k in new}
    if len(changed) <= CHANGED_RUNS_MAX:
        requests += [_ingest([key], suspects) for key in changed]
    else:
        batched |= {k: suspects[k] for k in changed}
    return requests + ([observation_request("observe", batched)] if batched else [])


def _ingest(keys: list[str], suspects: dict[str, str]) -> dg.RunRequest:
    """First in the queue (Dagster's run priority), ahead of upkeep and batched runs."""
    state = [f"{k}:{suspects.get(k, '')}" for k in keys]
    if len(keys) == 1:
        return dg.RunRequest(job_name=INGEST_FOLDERS_JOB, partition_key=keys[0],
                             run_key=run_key("ingest", state), tags=FIRST)
    return dg.RunRequest(job_name=INGEST_FOLDERS_JOB, run_key=run_key("ingest", state),
                         tags={RANGE_START: keys[0], RANGE_END: keys[-1]} | FIRST)


def repair_requests(context: dg.SensorEvaluationContext, store: DataStore,
                    keys: list[str]) -> list[dg.RunRequest]:
    """A tables run per partition whose table files are broken; the run key holds the files'
    state, so each break is repaired once. The rewrite keeps the data version: the trackers
    stay fresh."""
    requests = []
    broken = broken_table_files(context.instance, store, keys)
    # The latest write of the tables is part of the key: a file broken again the same way
    # after a repair is a new break, repaired again.
    written = {t: latest_storage_ids(context.instance, t, MATERIALIZATION)
               for t in TABLE_ASSETS} if broken else {}
    for key, files in broken.items():
        context.log.warning(f"{key}: {described(files)}: requesting a rewrite")
        state = [key, *(f"{f.path.name}:{f.signature or 'missing'}" for f in files),
                 *(f"{t}@{ids.get(key)}" for t, ids in written.items())]
        requests.append(dg.RunRequest(job_name=TABLES_JOB, partition_key=key,
                                      run_key=run_key("repair", state),
                                      tags={"align_track/repair": "broken table file"}))
    return requests
