"""Discovery: keep the dynamic partitions in step with the tree (stat calls only)."""

import hashlib

import dagster as dg

from .cleanup import cleanup_removed
from .partitions import experiment_partitions
from .resources import ExperimentTree


@dg.sensor(job=cleanup_removed, default_status=dg.DefaultSensorStatus.RUNNING,
           minimum_interval_seconds=30)
def experiment_folder_sensor(
    context: dg.SensorEvaluationContext, tree: ExperimentTree
) -> dg.SensorResult:
    """Adds a partition per new run directory and deletes the partitions whose folder is gone,
    requesting the cleanup of their data. State lives in the instance, not in a cursor."""
    on_disk = {r.key for r in tree.run_dirs()}
    known = set(context.instance.get_dynamic_partitions(experiment_partitions.name))
    new, gone = sorted(on_disk - known), sorted(known - on_disk)
    requests = []
    if gone:
        digest = hashlib.blake2b("\n".join(gone).encode(), digest_size=8).hexdigest()
        requests.append(dg.RunRequest(
            run_key=f"cleanup-{digest}",
            run_config={"ops": {"remove_partition_data": {"config": {"partitions": gone}}}},
        ))
    partition_requests = []
    if new:
        partition_requests.append(experiment_partitions.build_add_request(new))
    if gone:
        partition_requests.append(experiment_partitions.build_delete_request(gone))
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=partition_requests)
