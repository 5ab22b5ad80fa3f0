"""Discovery: keep the dynamic partitions in step with the tree and ask for an observation of
what may have changed (stat calls only; the hashing happens in the observation run)."""

import dagster as dg

from align_track_pipeline.defs.automation import tick_seconds
from align_track_pipeline.defs.cleanup import cleanup_config, cleanup_removed
from align_track_pipeline.defs.folders import (
    folders_to_observe,
    observation_request,
    observe_job,
    run_key,
)
from align_track_pipeline.defs.partitions import experiment_partitions
from align_track_pipeline.defs.resources import DataStore, ExperimentTree


@dg.sensor(jobs=[observe_job, cleanup_removed], default_status=dg.DefaultSensorStatus.RUNNING,
           minimum_interval_seconds=tick_seconds())
def experiment_folder_sensor(
    context: dg.SensorEvaluationContext, tree: ExperimentTree, store: DataStore
) -> dg.SensorResult | dg.SkipReason:
    """Adds a partition per new run directory, deletes the partitions whose folder is gone
    (requesting the cleanup of their data), and requests an observation of the folders whose
    stat data changed. State lives in the instance and the fingerprint cache, not a cursor."""
    try:
        run_dirs = tree.run_dirs()
    except FileNotFoundError as exc:  # e.g. an unmounted share: remove nothing, wait
        return dg.SkipReason(str(exc))
    on_disk = {r.key for r in run_dirs}
    known = set(context.instance.get_dynamic_partitions(experiment_partitions.name))
    new, gone = sorted(on_disk - known), sorted(known - on_disk)
    suspects = folders_to_observe(context.instance, run_dirs, store)
    if not (new or gone or suspects):
        return dg.SkipReason(f"{len(on_disk)} folders, none new, changed or removed")
    requests, partition_requests = [], []
    if new:
        partition_requests.append(experiment_partitions.build_add_request(new))
    if gone:
        partition_requests.append(experiment_partitions.build_delete_request(gone))
        requests.append(dg.RunRequest(
            job_name=cleanup_removed.name,
            run_key=run_key("cleanup", gone),
            run_config=cleanup_config(gone),
        ))
    if suspects:
        requests.append(observation_request("observe", suspects))
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=partition_requests)
