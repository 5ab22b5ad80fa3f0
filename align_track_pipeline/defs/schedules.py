"""The nightly pass: observe the whole tree, so changes are caught even with the sensor off."""

import dagster as dg

from align_track_pipeline.core.settings import current
from align_track_pipeline.core.source.discovery import TreeUnreadable
from align_track_pipeline.defs.folders import folders_to_observe, observation_request, observe_job
from align_track_pipeline.defs.resources import DataStore, ExperimentTree

NIGHTLY_CRON = "0 2 * * *"


def nightly_timezone() -> str:
    """`ALIGN_TRACK_TIMEZONE` (an IANA name such as Europe/Berlin), default UTC."""
    return current().get("ALIGN_TRACK_TIMEZONE")


@dg.schedule(job=observe_job, cron_schedule=NIGHTLY_CRON, execution_timezone=nightly_timezone(),
             default_status=dg.DefaultScheduleStatus.RUNNING, name="nightly_observation")
def nightly_observation(
    context: dg.ScheduleEvaluationContext, tree: ExperimentTree, store: DataStore
) -> dg.RunRequest | dg.SkipReason:
    """Launches an observation of the tree when any folder is new or may have changed (the
    observation registers new folders; automation then ingests what changed). With nothing
    changed, the tick launches nothing and writes no event."""
    try:
        run_dirs = tree.run_dirs()
    except TreeUnreadable as exc:
        return dg.SkipReason(str(exc))
    suspects = folders_to_observe(context.instance, run_dirs, store)
    if not suspects:
        return dg.SkipReason("no folder is new or changed since the last observation")
    return observation_request("nightly", suspects)
