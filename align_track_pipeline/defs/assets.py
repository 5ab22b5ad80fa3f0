"""The Parquet tables: one parse of a run directory feeds both `experiments` and `scenes`."""

from collections.abc import Iterator

import dagster as dg

from ..core.parse import PARSER_VERSION, ParsedRun, data_version, parse_run_dir
from ..core.sources import ParseError
from .checks import TABLE_CHECK_SPECS, check_events
from .metadata import partition_metadata
from .partitions import experiment_partitions
from .resources import DataStore, ExperimentTree

TABLE_ASSETS = ("experiments", "scenes")

_SPECS = [
    dg.AssetSpec(
        "experiments",
        description="One row per (run directory, alignment target): config, timing, scores.",
        partitions_def=experiment_partitions,
        code_version=PARSER_VERSION,
        kinds={"parquet"},
        group_name="tables",
        skippable=True,
    ),
    dg.AssetSpec(
        "scenes",
        description="One row per input_output.json item: probe, choices, decision, timing.",
        partitions_def=experiment_partitions,
        code_version=PARSER_VERSION,
        kinds={"parquet"},
        group_name="tables",
        skippable=True,
    ),
]


@dg.multi_asset(
    specs=_SPECS,
    check_specs=TABLE_CHECK_SPECS,
    partitions_def=experiment_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=True,
    name="parse_run_dirs",
)
def parse_run_dirs(
    context: dg.AssetExecutionContext, tree: ExperimentTree, store: DataStore
) -> Iterator[dg.Output]:
    """Parse each run directory of the batch once and write its two Parquet partitions.

    A batch covers many partitions in one run. Each partition gets its own materialization
    event (with its data version); a partition that fails to parse fails alone, reported with
    the file and the reason, after every other partition is written.
    """
    keys = context.partition_keys
    selected = {k.to_user_string() for k in context.selected_asset_keys}
    cache = store.fingerprints()
    try:
        versions = cache.versions(tree.run_dir(k) for k in keys)
    finally:
        cache.close()
    failures: dict[str, str] = {}
    for n, key in enumerate(keys, 1):
        try:
            parsed = _parse(tree, key, versions[key])
        except ParseError as exc:
            failures[key] = str(exc)
            context.log.error(f"[{n}/{len(keys)}] {key}: {exc}")
            continue
        for event in _write(store, key, parsed, versions[key], selected):
            context.log_event(event)
        context.log.info(f"[{n}/{len(keys)}] {key}: {parsed.scenes.num_rows} scenes")
    if failures:
        raise dg.Failure(
            description=f"{len(failures)} of {len(keys)} partitions failed to parse: "
            + "; ".join(failures.values()),
            metadata={"failures": dg.MetadataValue.json(failures)},
        )
    yield from ()


def _parse(tree: ExperimentTree, key: str, source_version: str) -> ParsedRun:
    run_dir = tree.run_dir(key)
    if not run_dir.path.is_dir():
        raise ParseError(run_dir.path, "run directory no longer exists")
    return parse_run_dir(run_dir, tree.root_path, source_version)


def _write(
    store: DataStore, key: str, parsed: ParsedRun, source_version: str, selected: set[str]
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    tags = {"dagster/data_version": data_version(source_version),
            "dagster/code_version": PARSER_VERSION}
    for table in TABLE_ASSETS:
        if table not in selected:
            continue
        data = getattr(parsed, table)
        path = store.parquet.write(table, key, data)
        yield dg.AssetMaterialization(
            asset_key=table,
            partition=key,
            metadata=partition_metadata(table, data, path, source_version),
            tags=tags,
        )
        yield from check_events(table, key, data, parsed.item_count)
