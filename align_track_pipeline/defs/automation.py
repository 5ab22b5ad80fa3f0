"""When the daemon materializes what: declarative automation conditions and their sensor.

The discovery sensor ingests a new or changed folder itself, in one run (`defs/sensors.py`);
the automation is the safety net for what that run missed or left to it (many folders at once,
a failed run, a code-version bump), on a slower tick. It does not request a partition a run is
already materializing, nor one just materialized after its input changed.

A partition is requested when it has never been materialized (and its last attempt did not
fail), when its folder got a new observed version, or when the asset's code version changed (a
parser or layout bump: every partition). A re-observation that found no change records nothing,
so a touched file never causes a re-ingest.

Why not plain `eager()`: it requests only partitions that become missing *after* the condition
was first evaluated, so a daemon started on an existing tree would never ingest it. Here a
missing partition is requested until it is in progress, and not again once it failed (a bad
folder is retried when it changes, not on every tick).
"""

import dagster as dg

from align_track_pipeline.core.settings import current

AC = dg.AutomationCondition


def discovery_seconds() -> int:
    """Minimum interval of the discovery sensor (`ALIGN_TRACK_SENSOR_INTERVAL_SECONDS`,
    default 5: the daemon's floor). Its tick is stat calls; it is the fast path."""
    return current().get("ALIGN_TRACK_SENSOR_INTERVAL_SECONDS")


def automation_seconds() -> int:
    """Minimum interval of the automation sensor (`ALIGN_TRACK_AUTOMATION_INTERVAL_SECONDS`,
    default 30): the safety net, whose evaluation costs more than a discovery tick."""
    return current().get("ALIGN_TRACK_AUTOMATION_INTERVAL_SECONDS")


_NOT_BUSY = ~AC.any_deps_in_progress() & ~AC.in_progress()
_NEVER_BUILT = (AC.missing() & ~AC.execution_failed()).with_label("missing_not_failed")

# The tables: new or missing partitions, new folder versions, a parser code-version bump.
TABLES_CONDITION = (
    (_NEVER_BUILT | (AC.any_deps_updated() | AC.code_version_changed()).since_last_handled())
    & ~AC.any_deps_missing()
    & _NOT_BUSY
).with_label("missing_changed_or_new_code")

# The trackers wait until the tables of the partition have *landed*, and then follow the
# tables' data version (`eager()` would ignore an update from a run that also planned the
# tracker). Requiring the deps to be neither missing nor about to be requested keeps the
# trackers in a run of their own, started on the tick after the tables' run: this is the safety
# net; the discovery sensor's `ingest_folders` run, the fast path, does both in one run. A
# rewrite of the tables with the same data version (a broken file repaired) leaves the
# trackers alone.
_TABLES_LANDED = AC.any_deps_match(AC.data_version_changed()).with_label("tables_landed")
TRACKERS_CONDITION = (
    (_NEVER_BUILT | (_TABLES_LANDED | AC.code_version_changed()).since_last_handled())
    & ~AC.any_deps_match(AC.missing() | AC.will_be_requested()).with_label(
        "tables_missing_or_requested")
    & _NOT_BUSY
).with_label("after_tables_landed")

# An unpartitioned asset over every table partition (`scene_comparison`, `dashboard`):
# rebuilt after any partition of its deps was updated, once no run of theirs is in progress (a
# backfill of many partitions gives one rebuild at its end, not one per partition); built once
# when missing, as soon as any table partition exists.
WHOLE_TABLE_CONDITION = (
    (_NEVER_BUILT | (AC.any_deps_updated() | AC.code_version_changed()).since_last_handled())
    & AC.any_deps_match(~AC.missing()).with_label("any_table_partition_built")
    & _NOT_BUSY
).with_label("after_any_table_partition_changed")

# Runs that keep derived data up to date (the scene comparison, the Aim index) carry this tag;
# dagster.yaml lets one of them run at a time, so they never take every run slot and a new
# folder's ingest starts at once.
UPKEEP_TAGS = {"align_track/upkeep": "true"}
ANALYSIS = ("scene_comparison", "dashboard")  # drawn from every table partition

automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all() - dg.AssetSelection.assets(*ANALYSIS),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=automation_seconds(),
    description="The safety net: materializes missing and changed partitions (tables after a "
    "folder changed, trackers after the tables landed) that the discovery sensor's run did not, "
    "and every partition after a code version bump.",
)

comparison_automation_sensor = dg.AutomationConditionSensorDefinition(
    "comparison_automation",
    target=dg.AssetSelection.assets(*ANALYSIS),
    run_tags=UPKEEP_TAGS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=automation_seconds(),
    description="Rebuilds the scene comparison and the dashboard after any table partition "
    "changed (an upkeep run: one at a time, never in the way of an ingest).",
)
