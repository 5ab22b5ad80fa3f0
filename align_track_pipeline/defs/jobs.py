import dagster as dg

from .partitions import experiment_partitions

# Parse run directories into the Parquet tables; one run covers a whole partition range.
ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.assets("experiments", "scenes"),
    partitions_def=experiment_partitions,
)
