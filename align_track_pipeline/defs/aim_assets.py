"""`aim_runs` (one flat run per scene) and the `aim_reindex` job that keeps the index current."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from ..core import aim_compat
from ..core.aim_writer import AIM_LAYOUT_VERSION, aim_version, plan_scene_runs
from .automation import tick_seconds
from .batch import Logged, materialize_each, read_partition, tracker_asset
from .resources import AimTarget, DataStore


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


@dg.op(description="Bring the Aim repo index up to date: index runs whose index entry is "
       "missing or outdated, or rebuild it all with full=True.")
def reindex_aim(context: dg.OpExecutionContext, config: ReindexConfig, aim: AimTarget) -> None:
    repo = aim_compat.open_repo(Path(aim.repo))
    if config.full:
        count = aim_compat.rebuild_index(repo)
    else:
        count = aim_compat.index_runs(repo, aim_compat.outdated_runs(repo))
    context.log.info(f"indexed {count} runs ({'full rebuild' if config.full else 'incremental'})")
    context.add_output_metadata({"indexed_runs": count, "full": config.full})


@dg.job(description="Aim index upkeep: after aim_runs materializations, or by hand.")
def aim_reindex() -> None:
    reindex_aim()


@dg.asset_sensor(asset_key=dg.AssetKey("aim_runs"), job=aim_reindex,
                 default_status=dg.DefaultSensorStatus.RUNNING,
                 minimum_interval_seconds=tick_seconds())
def aim_reindex_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    """Several aim_runs materializations between ticks lead to one reindex run."""
    yield dg.RunRequest(run_key=f"aim-reindex-{asset_event.timestamp}")
