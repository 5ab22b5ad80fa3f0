"""`aim_runs` (one flat run per scene) and `aim_index`, the repo index kept current after them."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from align_track_pipeline.core.trackers.aim import compat as aim_compat
from align_track_pipeline.core.trackers.aim.writer import (
    AIM_LAYOUT_VERSION,
    aim_version,
    plan_scene_runs,
)
from align_track_pipeline.defs.automation import tick_seconds
from align_track_pipeline.defs.resources import AimTarget, DataStore
from align_track_pipeline.defs.trackers import (
    Logged,
    materialize_each,
    read_partition,
    tracker_asset,
)


@tracker_asset(
    "aim_runs",
    "One flat Aim run per scene, named <scenario_id>_idx<scene_index>, with its texts inline; "
    "indexed as written, so the Aim UI shows it at once.",
    AIM_LAYOUT_VERSION,
    "aim",
)
def log_aim_runs(
    context: dg.AssetExecutionContext, store: DataStore, aim: AimTarget
) -> Iterator[dg.Output]:
    """Upsert each partition's scene runs: unchanged scenes are skipped, changed ones
    replaced, removed ones deleted; new runs are added to the index in this process."""
    writer = aim.writer()
    try:
        materialize_each(context, lambda key: _upsert(key, store, aim, writer))
    finally:
        writer.close()
    yield from ()


def _upsert(key: str, store: DataStore, aim: AimTarget, writer) -> Logged:
    experiments, scenes = read_partition(store, key)
    result = writer.upsert(key, plan_scene_runs(experiments, scenes))
    return aim_version(experiments[0]["source_version"]), {
        "runs": len(scenes),
        "created": len(result.created),
        "unchanged": result.unchanged,
        "deleted": result.deleted,
        "indexed": result.indexed,
        "repo": dg.MetadataValue.path(aim.repo),
        "open": dg.MetadataValue.md(
            f"`align-track aim-ui` (or `aim up --repo {aim.repo}`), then filter "
            f"`run.partition_key == \"{key}\"`"),
    }


class ReindexConfig(dg.Config):
    full: bool = False  # rebuild the whole index (slow); default: only outdated runs


@dg.asset(
    deps=["aim_runs"],
    group_name="trackers",
    kinds={"aim"},
    pool="aim",  # the index is one writer's at a time, like the runs
    description="The Aim repo index (what the runs table and queries read): brought up to "
    "date after aim_runs materializations, or rebuilt with full=True.",
)
def aim_index(context: dg.AssetExecutionContext, config: ReindexConfig,
              aim: AimTarget) -> dg.MaterializeResult:
    """Index the runs whose index entry is missing or outdated (e.g. written while `aim up`
    held the index), or rebuild it all."""
    repo = aim_compat.open_repo(Path(aim.repo))
    if config.full:
        count = aim_compat.rebuild_index(repo)
    else:
        count = aim_compat.index_runs(repo, aim_compat.outdated_runs(repo))
    context.log.info(f"indexed {count} runs ({'full rebuild' if config.full else 'incremental'})")
    return dg.MaterializeResult(metadata={"indexed_runs": count, "full": config.full,
                                          "repo": dg.MetadataValue.path(aim.repo)})


# Aim index upkeep: launched by the sensor below after aim_runs materializations, or by hand.
aim_reindex = dg.define_asset_job("aim_reindex", selection=["aim_index"])


@dg.asset_sensor(asset_key=dg.AssetKey("aim_runs"), job=aim_reindex,
                 default_status=dg.DefaultSensorStatus.RUNNING,
                 minimum_interval_seconds=tick_seconds())
def aim_reindex_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    """Several aim_runs materializations between ticks lead to one reindex run."""
    yield dg.RunRequest(run_key=f"aim-reindex-{asset_event.timestamp}")
