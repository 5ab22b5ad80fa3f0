"""A tracker's follow-up asset (`Tracker.follow_up`, e.g. Aim's repo index): brought up to date
after the tracker's materializations by a sensor, or by hand through its job."""

import dagster as dg

from align_track_pipeline.core.trackers.base import Tracker
from align_track_pipeline.defs.automation import UPKEEP_TAGS, automation_seconds
from align_track_pipeline.defs.resources import Trackers


class FollowUpConfig(dg.Config):
    full: bool = False  # from scratch (slow); default: only what is outdated


def follow_up_defs(tracker: Tracker) -> dg.Definitions | None:
    """The follow-up asset, its job and its sensor; None for a tracker without one."""
    follow = tracker.follow_up()
    if follow is None:
        return None

    @dg.asset(name=follow.asset, deps=[tracker.asset], group_name="trackers",
              kinds={tracker.name}, pool=tracker.pool,  # its store's writers, like the runs
              description=follow.description)
    def follow_up(context: dg.AssetExecutionContext, config: FollowUpConfig,
                  trackers: Trackers) -> dg.MaterializeResult:
        current = trackers.get(tracker.name).follow_up()
        assert current is not None  # the same tracker, configured when the run started
        metadata = dict(current.run(config.full))
        context.log.info(f"{follow.asset}: {metadata}")
        return dg.MaterializeResult(metadata=metadata)

    job = dg.define_asset_job(follow.job, selection=[follow.asset], tags=UPKEEP_TAGS)

    @dg.asset_sensor(asset_key=dg.AssetKey(tracker.asset), job=job, name=f"{follow.job}_sensor",
                     default_status=dg.DefaultSensorStatus.RUNNING,
                     minimum_interval_seconds=automation_seconds())
    def after_writes(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
        """Several materializations between ticks lead to one run."""
        yield dg.RunRequest(run_key=f"{follow.job}-{asset_event.timestamp}")

    return dg.Definitions(assets=[follow_up], jobs=[job], sensors=[after_writes])
