import dagster as dg

from align_track_pipeline.core.settings import current

# One partition per run directory; keys come from core.discovery.partition_key.
experiment_partitions = dg.DynamicPartitionsDefinition(name="experiments")

PARTITIONS_PER_RUN = "ALIGN_TRACK_PARTITIONS_PER_RUN"


# The tags of a run over a contiguous range of partitions (what a backfill of a range sets).
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def contiguous_ranges(keys: list[str], order: list[str],
                      most: int | None = None) -> list[tuple[str, str]]:
    """Group `keys` into (first, last) runs that are contiguous in the partition order, of
    at most `most` partitions each (None: no bound)."""
    wanted = set(keys)
    ranges, start, prev, size = [], None, None, 0
    for key in order:
        if key in wanted and (most is None or size < most):
            start, prev, size = start or key, key, size + 1
            continue
        if start:
            ranges.append((start, prev))
        start, prev, size = (key, key, 1) if key in wanted else (None, None, 0)
    if start:
        ranges.append((start, prev))
    return ranges


def partitions_per_run() -> int:
    return current().get(PARTITIONS_PER_RUN)


def batch_policy() -> dg.BackfillPolicy:
    """UI backfills and automation requests of the tables and trackers: contiguous batches of at
    most `ALIGN_TRACK_PARTITIONS_PER_RUN` partitions (default 50) per run, never one run per
    partition, and several runs for a large backfill so they go in parallel (as many at once as
    `max_concurrent_runs`, one per core, and the trackers' pools allow). A run costs seconds to
    start; 50 partitions of the Aim phase are about a minute of work."""
    return dg.BackfillPolicy.multi_run(partitions_per_run())
