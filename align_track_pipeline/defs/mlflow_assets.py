"""`mlflow_runs`: each partition's Parquet rows as MLflow runs (never re-parsed from JSON)."""

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import dagster as dg

from align_track_pipeline.core.source.discovery import rel_path_of
from align_track_pipeline.core.trackers.mlflow.plan import (
    MLFLOW_LAYOUT_VERSION,
    mlflow_version,
    plan_runs,
)
from align_track_pipeline.defs.resources import DataStore, ExperimentTree, MlflowTarget
from align_track_pipeline.defs.trackers import (
    Logged,
    materialize_each,
    read_partition,
    tracker_asset,
)


@tracker_asset(
    "mlflow_runs",
    "One MLflow parent run per experiment row with one nested child run per scene "
    "(or one flat run per experiment row).",
    MLFLOW_LAYOUT_VERSION,
    "mlflow",
)
def log_mlflow_runs(
    context: dg.AssetExecutionContext,
    tree: ExperimentTree,
    store: DataStore,
    mlflow: MlflowTarget,
) -> Iterator[dg.Output]:
    """Upsert each partition's runs: unchanged partitions are left alone, changed ones
    replaced, half-written ones repaired."""
    writer = mlflow.writer()
    materialize_each(context, lambda key: _upsert(key, tree, store, mlflow, writer))
    yield from ()


def _upsert(key, tree, store, mlflow, writer) -> Logged:
    experiments, scenes = read_partition(store, key)
    specs = plan_runs(experiments, scenes, tree.root_path / rel_path_of(key), mlflow.mode)
    result = writer.upsert(key, specs)
    parents = [result.run_ids[s.key] for s in specs if s.parent_key is None]
    links = ([writer.run_url(mlflow.ui_url, p) for p in parents] if mlflow.ui_url else parents)
    source_version = experiments[0]["source_version"]
    return mlflow_version(source_version, mlflow.mode), {
        "runs": len(specs),
        "parent_runs": len(parents),
        "written": result.written,
        "replaced_runs": result.deleted,
        "experiment": mlflow.experiment,
        "tracking_uri": _without_credentials(mlflow.tracking_uri),
        "parent_run_links" if mlflow.ui_url else "parent_run_ids": dg.MetadataValue.json(links),
    }


def _without_credentials(uri: str) -> str:
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
