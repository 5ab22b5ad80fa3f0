"""`aim_index`: the Aim repo index (what Aim's runs table and queries read), brought up to date
after `aim_runs` materializations by a sensor, or rebuilt by hand."""

import dagster as dg

from align_track_pipeline.core.trackers.aim.tracker import AimTracker
from align_track_pipeline.defs.automation import UPKEEP_TAGS, automation_seconds
from align_track_pipeline.defs.resources import Trackers

AIM_RUNS = "aim_runs"


class ReindexConfig(dg.Config):
    full: bool = False  # rebuild the whole index (slow); default: only outdated runs


@dg.asset(
    deps=[AIM_RUNS],
    group_name="trackers",
    kinds={"aim"},
    pool="aim",  # the index is one writer's at a time, like the runs
    description="The Aim repo index (what the runs table and queries read): brought up to "
    "date after aim_runs materializations, or rebuilt with full=True.",
)
def aim_index(context: dg.AssetExecutionContext, config: ReindexConfig,
              trackers: Trackers) -> dg.MaterializeResult:
    """Index the runs whose index entry is missing or outdated (e.g. written while `aim up`
    held the index), or rebuild it all."""
    aim = trackers.get("aim")
    assert isinstance(aim, AimTracker)
    count = aim.reindex(config.full)
    context.log.info(f"indexed {count} runs ({'full rebuild' if config.full else 'incremental'})")
    return dg.MaterializeResult(metadata={"indexed_runs": count, "full": config.full,
                                          "repo": dg.MetadataValue.path(aim.repo)})


# Aim index upkeep: launched by the sensor below after aim_runs materializations, or by hand.
aim_reindex = dg.define_asset_job("aim_reindex", selection=["aim_index"], tags=UPKEEP_TAGS)


@dg.asset_sensor(asset_key=dg.AssetKey(AIM_RUNS), job=aim_reindex,
                 default_status=dg.DefaultSensorStatus.RUNNING,
                 minimum_interval_seconds=automation_seconds())
def aim_reindex_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    """Several aim_runs materializations between ticks lead to one reindex run."""
    yield dg.RunRequest(run_key=f"aim-reindex-{asset_event.timestamp}")


def aim_index_defs() -> dg.Definitions:
    """The index asset, its job and its sensor (merged into the pipeline when Aim is a
    registered tracker)."""
    return dg.Definitions(assets=[aim_index], jobs=[aim_reindex], sensors=[aim_reindex_sensor])
